"""Start a hopper module as a child process, connected over a socket pair."""

from __future__ import annotations

import os
import sys
from typing import Any


def spawn(module: str) -> tuple[Any, Any]:
    """`python -m MODULE FD`: the process, and this end of its connection.

    A plain interpreter rather than multiprocessing's spawn: it does not re-run the caller's
    __main__ (a user's script, or the CLI with click and rich), so it starts in about 50 ms
    and a script calling hopper.run() needs no `if __name__ == "__main__"` guard.
    """
    import socket
    import subprocess
    from multiprocessing.connection import Connection

    # hopper must be importable there even when this process found it through a path it
    # added at run time.
    paths = [p for p in sys.path if isinstance(p, str) and p]
    inherited = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
    }
    parent, child = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        child.close()
    return process, Connection(parent.detach())
