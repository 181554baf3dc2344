"""hopper in a real terminal: a pseudo-terminal whose master side these tests read and type
into, as a person at a keyboard would. Ctrl-C is the byte 0x03, which the terminal turns into
SIGINT for the foreground process group; nothing here sends a signal itself."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
# What starts a line over on a terminal: a carriage return, or erasing the line.
RESTART = re.compile(r"\r|\x1b\[2K")


def screen_lines(raw: str) -> list[str]:
    """The lines a person would read: on each, what was written after it was last started
    over (a live bar redraws its line in place)."""
    return [ANSI.sub("", RESTART.split(line)[-1]) for line in raw.replace("\r\n", "\n").split("\n")]


class Terminal:
    """hopper's stdin and stderr (and stdout unless given) on a pty it controls."""

    def __init__(self, args: list[str], cwd: Path, stdout: Path | None = None) -> None:
        self.master, slave = pty.openpty()
        # 120 columns: room for the bar next to its counts.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x00\x28\x00\x78\x00\x00\x00\x00")
        out = stdout.open("wb") if stdout is not None else slave

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            [sys.executable, "-m", "hopper", *args],
            stdin=slave,
            stdout=out,
            stderr=slave,
            cwd=cwd,
            preexec_fn=controlling_terminal,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"},
        )
        os.close(slave)
        if stdout is not None:
            out.close()  # type: ignore[union-attr]
        self.raw = b""

    def read(self, seconds: float) -> str:
        """Everything written to the terminal so far, escape sequences removed, after reading
        for up to `seconds` more."""
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.raw += chunk
            elif self.process.poll() is not None:
                break
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        ends = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < ends:
            self.read(0.2)
        code = self.process.wait(timeout=5)
        text = self.read(0.5)
        os.close(self.master)
        return code, text


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(300):
        (data / f"f{i:03}.csv").write_text("a\n1\n")
    (tmp_path / "w.py").write_text(
        "import time\n"
        "def handler(event, context):\n"
        "    time.sleep(0.05)\n"
        "    if event['dataset_prefix'].endswith('7.csv'):\n"
        "        raise ValueError('bad row in ' + event['dataset_prefix'])\n"
        "    return {'rows': 1}\n"
    )
    return tmp_path


@pytest.mark.slow
def test_a_terminal_shows_a_bar_and_ctrl_c_on_its_own_line(folder: Path) -> None:
    results = folder / "results.txt"
    terminal = Terminal(
        ["run", "data", "--target", "w.py:handler", "--concurrency", "2"], folder, results
    )
    screen = terminal.read(3.0)
    # The folder was counted: a bar toward its total, with a rate and the time left.
    assert re.search(r"\d+/300 items\s+\d+/s", screen), screen[-500:]
    assert "ETA" in screen and "%" in screen
    # Failures print on stdout as they happen, before the run ends.
    assert "WORKER_FAILED batch 8 [f007.csv]: ValueError: bad row in f007.csv" in (
        results.read_text()
    )
    terminal.type(b"\x03")
    code, screen = terminal.finish()
    assert code == 130
    lines = screen_lines(terminal.raw.decode("utf-8", "replace"))
    [said] = [line for line in lines if "hopper: stopping" in line]
    # On a line of its own, not over the bar, and saying what is still in flight.
    assert re.fullmatch(
        r"hopper: stopping after the \d+ batch(es)? in flight \(Ctrl-C again to abort\)", said
    ), said
    assert "stopped        │ interrupted" in screen or "interrupted" in screen
    # stdout (a file here) holds results and failures only; the summary went to the terminal.
    stdout = results.read_text().splitlines()
    assert stdout and all("\t" in line or line.startswith("WORKER_FAILED") for line in stdout)
    assert "hopper run" in screen and "status" in screen
    assert "hopper run" not in "\n".join(stdout)


@pytest.mark.slow
def test_with_stdout_redirected_the_summary_goes_to_the_terminal_only(folder: Path) -> None:
    results = folder / "results.txt"
    terminal = Terminal(
        ["run", "data", "--target", "w.py:handler", "--concurrency", "4", "--limit", "20"],
        folder,
        results,
    )
    code, screen = terminal.finish()
    assert code == 1  # f007 and f017 failed in their worker
    stdout = results.read_text().splitlines()
    assert len(stdout) == 20  # one line per item, nothing else
    assert not any(word in "\n".join(stdout) for word in ("status", "dispatched", "hopper run"))
    assert "20 items in 20 batches" in screen and "worker failed" in screen


def test_nothing_in_flight_is_said_so() -> None:
    """A first Ctrl-C before any batch was taken: nothing is in flight yet."""
    from hopper.cli import _Watch

    said: list[str] = []

    class Listening(_Watch):
        def _echo(self, line: str, *, err: bool = False) -> None:
            said.append(line)

    watch = Listening(progress=False, lines=False)
    watch.stopping()
    assert said == ["hopper: stopping now: nothing is in flight (Ctrl-C again to abort)"]
