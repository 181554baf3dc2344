"""The `hopper` command: a thin Click layer over the library. The only module with click/rich.

stdout carries results (or, with --json, exactly one JSON document); progress and tables go to
stderr, and only when stderr is a terminal. Exit codes: 0 ok, 1 the run or an AWS call failed,
2 bad input, 3 another run holds --state, 130 interrupted (hopper.errors).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hopper import runner
from hopper.config import (
    DEFAULT_LIST_PARALLELISM,
    INVOCATION_TYPES,
    MODES,
    TRANSPORTS,
    RunConfig,
)
from hopper.engine import RunHooks
from hopper.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, HopperError, LeaseHeld, StartFailure
from hopper.items import NOT_DISPATCHED, WORKER_FAILED, Outcome
from hopper.summary import KEYS_SHOWN, PlanSummary, RunSummary

F = TypeVar("F", bound=Callable[..., Any])


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _stack(func: F, options: list[Callable[[Any], Any]]) -> F:
    """Apply options so that --help lists them in the order given."""
    for option in reversed(options):
        func = option(func)
    return func


def _selection_options(func: F) -> F:
    """Options shared by `run` and `plan`: what to list, keep, batch and where to send it."""
    options = [
        click.option(
            "--target",
            "-t",
            help="lambda:NAME, NAME, a Lambda ARN, FILE.py:FUNC or python:MODULE:FUNC.",
        ),
        click.option(
            "--mode",
            default="objects",
            show_default=True,
            type=click.Choice(MODES),
            help="One item per object, or per common prefix (a sub-folder locally).",
        ),
        click.option(
            "--start-after",
            metavar="KEY",
            help="List only keys after KEY (a cursor from an earlier run).",
        ),
        click.option(
            "--include",
            multiple=True,
            metavar="GLOB",
            help="Keep keys matching GLOB (repeatable; * also matches /).",
        ),
        click.option(
            "--exclude", multiple=True, metavar="GLOB", help="Drop keys matching GLOB (repeatable)."
        ),
        click.option(
            "--min-size",
            metavar="SIZE",
            help="Keep objects of at least SIZE bytes (512, 10KB, 2MiB).",
        ),
        click.option("--max-size", metavar="SIZE", help="Keep objects of at most SIZE bytes."),
        click.option(
            "--modified-after",
            metavar="ISO8601",
            help="Keep objects modified after this time (UTC if no zone).",
        ),
        click.option(
            "--modified-before", metavar="ISO8601", help="Keep objects modified before this time."
        ),
        click.option("--limit", metavar="N", help="Stop after N selected items."),
        click.option(
            "--batch-size",
            default="1",
            show_default=True,
            metavar="N",
            help="Items per invocation.",
        ),
        click.option(
            "--invocation-type",
            default="event",
            show_default=True,
            type=click.Choice(INVOCATION_TYPES),
            help="Lambda invocation: asynchronous (event) or waiting for each result.",
        ),
        click.option(
            "--payload", metavar="JSON", help="A JSON object merged into every worker event."
        ),
        click.option(
            "--transport",
            type=click.Choice(TRANSPORTS),
            default="auto",
            show_default=True,
            help="How S3 and Lambda are called: hopper's lean signed HTTP (fast), or boto3. "
            "auto is fast unless an HTTP(S)_PROXY is set.",
        ),
        click.option(
            "--list-parallelism",
            metavar="N",
            help="How many S3 pages to list at the same time when a listing runs past its "
            f"first page; 1 lists one page after another [default: {DEFAULT_LIST_PARALLELISM}].",
        ),
        click.option("--region", help="AWS region."),
        click.option("--profile", help="AWS named profile."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout."),
    ]
    return _stack(func, options)


_CONFIG_KEYS = (
    "target", "mode", "start_after", "include", "exclude", "min_size", "max_size",
    "modified_after", "modified_before", "limit", "batch_size", "invocation_type", "payload",
    "region", "profile", "concurrency", "deadline", "timeout", "memory", "max_attempts",
    "state", "incremental", "max_failures", "transport", "list_parallelism", "results_queue",
    "wait_for_workers",
)  # fmt: skip


def _config(source: str, options: dict[str, Any]) -> RunConfig:
    values = {
        key: options[key] for key in _CONFIG_KEYS if options.get(key) not in (None, (), False)
    }
    return RunConfig.from_mapping({"source": source, **values})


def _session(config: RunConfig) -> Any:
    uses_aws = (
        not config.is_local_source
        or (config.target and not config.is_local_target)
        or (config.state or "").startswith("s3://")
    )
    if not uses_aws:
        return None
    from hopper import aws

    return aws.make_session(region=config.region, profile=config.profile)


class _Group(click.Group):
    """Turns every error into one line on stderr and an exit code; never a traceback."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        try:
            code = super().main(
                args, prog_name or "hopper", complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.Abort:
            code = _fail("aborted", EXIT_INTERRUPTED)
        except click.UsageError as exc:
            code = _fail(exc.format_message(), EXIT_BAD_INPUT)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except HopperError as exc:
            code = _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            code = _fail("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:
            logging.getLogger("hopper").debug("unexpected error", exc_info=True)
            code = _fail(f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)", 1)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int) -> int:
    click.echo(f"hopper: error: {message}", err=True)
    return code


_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=_CONTEXT)
@click.version_option(package_name="hopper")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Fan out the objects of an S3 bucket (or a local folder) to a Lambda (or local) worker."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


@cli.command()
@click.argument("source")
@_selection_options
@click.option(
    "--concurrency",
    metavar="N",
    help="Invocations in flight at once [default: 16 for Lambda, CPUs for local].",
)
@click.option(
    "--deadline",
    metavar="SECONDS",
    help="Stop dispatching after SECONDS; report the cursor to resume from.",
)
@click.option(
    "--timeout", metavar="SECONDS", help="Local workers: time limit per invocation [default: 60]."
)
@click.option(
    "--memory",
    metavar="MB",
    help="Local workers: memory_limit_in_mb their context reports [default: 128].",
)
@click.option(
    "--max-attempts",
    metavar="N",
    help="Attempts per batch on throttling, 5xx or connection errors [default: 6].",
)
@click.option(
    "--state", metavar="s3://B/P|DIR", help="Keep a ledger, a lease and a checkpoint here."
)
@click.option(
    "--incremental", is_flag=True, help="Dispatch only new or changed items (needs --state)."
)
@click.option(
    "--max-failures", metavar="N|P%", help="Stop and fail once more than N items (or P%) failed."
)
@click.option(
    "--wait", is_flag=True, help="Wait for another run holding --state instead of exiting 3."
)
@click.option(
    "--results-queue",
    metavar="URL|ARN",
    help="Track event invokes to the worker's own result: the SQS queue the worker's async "
    "config sends OnSuccess and OnFailure records to (needs --state).",
)
@click.option(
    "--wait-for-workers",
    metavar="SECONDS",
    help="After dispatch, wait this long for every tracked batch's outcome; the exit code "
    "then counts the workers' failures and what is still pending.",
)
@click.option(
    "--schedule",
    metavar="EXPR",
    help="Keep running: start a run at each fire time (needs --state).",
)
@click.option(
    "--timezone",
    "zone",
    metavar="TZ",
    help="With --schedule: the IANA time zone whose wall clock cron() and at() read [default: UTC].",
)
def run(
    source: str, as_json: bool, wait: bool, schedule: str | None, zone: str | None, **options: Any
) -> int:
    """List SOURCE, select, batch and invoke TARGET for every batch.

    SOURCE is s3://BUCKET[/PREFIX], inventory:s3://… (an S3 Inventory report) or a local
    folder. The worker gets f(event, context):

    \b
      event["items"][i]["path"]                   locally: the file (or folder) to read
      event["bucket"], event["items"][i]["key"]   on S3: the object to read
      event["dataset_prefix"]                     one-item batches: the item's key (the seed's)

    The README's "The worker event" has the rest. Exit code 0 when every item was dispatched
    and no worker is known to have failed, 1 when one failed, was not dispatched or was lost,
    2 on bad input, 3 when another run holds --state, 130 when Ctrl-C stopped it.
    """
    config = _config(source, options)
    if config.target is None:
        raise click.UsageError("missing --target (lambda:NAME, FILE.py:FUNC, ...)")
    if zone is not None and schedule is None:
        raise click.UsageError("--timezone goes with --schedule")
    if schedule is not None:
        return _scheduled(config, schedule, zone or "UTC", as_json)
    summary = _run_once(config, wait=wait, lines=not as_json)
    return _report_run(summary, as_json)


def _run_once(
    config: RunConfig,
    *,
    wait: bool = False,
    stop: Any = None,
    retry_of: str | None = None,
    lines: bool = True,
) -> RunSummary:
    """One run, through hopper.run; the first Ctrl-C stops it after the batches in flight
    (`stop`, when a schedule already listens for Ctrl-C). With `lines`, each result and
    failure is printed on stdout as it arrives."""
    watch = _Watch(progress=_stderr_is_terminal(), lines=lines)
    if watch.progress and retry_of is None and config.is_local_source:
        # A folder lists in a moment: count it aside, and the bar gets its total.
        watch.count_in_background(config)
    try:
        with _interruptible(stop, say=watch.stopping) as interrupted:
            return runner.run(
                config,
                session=_session(config),
                hooks=watch,
                stop=interrupted,
                wait=wait,
                retry_of=retry_of,
            )
    finally:
        watch.stop()


def _report_run(summary: RunSummary, as_json: bool) -> int:
    if summary.error and summary.counts.listed == 0 and summary.counts.batches == 0:
        # Nothing happened before the error: one line says it all.
        raise StartFailure(summary.error)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        _print_run(summary)
    if summary.error:
        click.echo(f"hopper: error: {summary.error}", err=True)
    return summary.exit_code


class _interruptible:
    """The first Ctrl-C asks the run to stop after what is in flight; a second one aborts.
    Given an event that already listens (a schedule's), it just hands that on. `say` prints
    the message on a line of its own (above a progress bar)."""

    def __init__(self, event: Any = None, say: Callable[[], None] | None = None) -> None:
        self.given = event
        self.say = say

    def __enter__(self) -> Any:
        import signal
        import threading

        self.previous: Any = None
        if self.given is not None:
            return self.given
        self.event = threading.Event()
        if threading.current_thread() is threading.main_thread():

            def handle(signum: int, frame: Any) -> None:
                if self.say is not None:
                    self.say()
                else:
                    click.echo(
                        "hopper: stopping after the batches in flight (Ctrl-C again to abort)",
                        err=True,
                    )
                self.event.set()
                signal.signal(signal.SIGINT, signal.default_int_handler)

            self.previous = signal.signal(signal.SIGINT, handle)
        return self.event

    def __exit__(self, *_: Any) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _scheduled(config: RunConfig, expression: str, zone: str, as_json: bool) -> int:
    """Run at each fire time of EXPRESSION until Ctrl-C; ticks that find the lease held are skipped."""
    from datetime import UTC, datetime

    from hopper.schedule import next_fire_times, parse_schedule, parse_timezone

    if config.state is None:
        raise click.UsageError("--schedule needs --state: runs must not overlap")
    plan_ = parse_schedule(expression)
    tz = parse_timezone(zone)
    log = logging.getLogger("hopper.schedule")
    anchor = datetime.now(UTC)
    code = 0
    with _interruptible() as stop:
        while not stop.is_set():
            due = next_fire_times(plan_, anchor, 1, tz)
            if not due:
                log.warning("%s fires no more", expression)
                break
            now = datetime.now(UTC)
            if due[0] < now:
                log.warning(
                    "skipped the tick at %s: the previous run was still going", due[0].isoformat()
                )
                anchor = due[0]
                continue
            click.echo(
                f"hopper: next run at {_local_time(due[0], tz)}{due[0].isoformat()}", err=True
            )
            if stop.wait((due[0] - now).total_seconds()):
                break
            anchor = due[0]
            try:
                summary = _run_once(config, stop=stop, lines=not as_json)
            except LeaseHeld as exc:
                log.warning("skipped the tick at %s: %s", due[0].isoformat(), exc)
                continue
            code = _report_run(summary, as_json)
    return code


@cli.command()
@click.argument("source")
@_selection_options
@click.option(
    "--state",
    metavar="s3://B/P|DIR",
    help="With --incremental: the state whose job to plan (read, never written).",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Leave out what has not changed since its worker succeeded (needs --state).",
)
def plan(source: str, as_json: bool, **options: Any) -> int:
    """Show what `run` would do: list, select and batch SOURCE, invoke nothing.

    Exit code 0, 1 when an AWS call failed, 2 on bad input.
    """
    config = _config(source, options)
    summary = runner.plan(config, session=_session(config))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        _print_plan(summary)
    return 0


def _store(state: str, region: str | None, profile: str | None) -> Any:
    """The state location of a command that reads runs: a folder that does not exist is bad
    input (a typo), not an empty state."""
    from hopper.runstate.store import open_store

    session = None
    if state.startswith("s3://"):
        from hopper import aws

        session = aws.make_session(region=region, profile=profile)
    store = open_store(state, session=session)
    if not store.exists():
        raise click.UsageError(f"--state {state!r}: no such folder; no run has kept state there")
    return store


def _state_options(func: F) -> F:
    return _stack(
        func,
        [
            click.option(
                "--state", required=True, metavar="s3://B/P|DIR", help="The state location."
            ),
            click.option("--region", help="AWS region."),
            click.option("--profile", help="AWS named profile."),
            click.option(
                "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
            ),
        ],
    )


_NO_COLLECT = click.option(
    "--no-collect",
    is_flag=True,
    help="Do not first collect the workers' outcomes waiting in the results queue.",
)


def _collect_first(store: Any, region: str | None, profile: str | None) -> None:
    """Collect the outcomes tracked runs wait for, so what follows is current. A state with no
    tracked run pending makes no AWS call."""
    from hopper import aws
    from hopper.runstate.tracking import collect_state

    done = collect_state(
        store,
        session_for=lambda: aws.make_session(region=region, profile=profile),
        budget=COLLECT_SECONDS,
    )
    if done.received:
        click.echo(
            f"hopper: collected {done.recorded} worker outcomes"
            + (
                f" ({done.orphaned + done.malformed} dropped)"
                if done.orphaned + done.malformed
                else ""
            ),
            err=True,
        )


# How long report, runs and collect drain results queues, at most.
COLLECT_SECONDS = 20.0


@cli.command()
@_state_options
@_NO_COLLECT
def runs(
    state: str, region: str | None, profile: str | None, as_json: bool, no_collect: bool
) -> int:
    """List the runs recorded in --state, newest first.

    Exit code 0, 1 when an AWS call failed, 2 on bad input (a --state folder that does not
    exist).
    """
    from hopper.runstate.record import list_runs

    store = _store(state, region, profile)
    if not no_collect:
        _collect_first(store, region, profile)
    found = list_runs(store)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return 0
    if not found:
        click.echo("no runs")
    for run_ in found:
        workers = ""
        if run_.get("tracking") is not False and "processed" in run_:
            workers = (
                f"  processed {run_.get('processed', '-')}"
                f"  worker failed {run_.get('worker_failed', '-')}"
                + "".join(
                    f"  {name} {run_[name]}" for name in ("pending", "lost") if run_.get(name)
                )
            )
        click.echo(
            f"{run_.get('run_id')}  {run_.get('started_at', '?')}  {run_.get('status', '?'):<11}"
            f"  dispatched {run_.get('dispatched', '-')}  failed {run_.get('failed', '-')}"
            f"  not dispatched {run_.get('not_dispatched', '-')}{workers}"
            + (f"  retry of {run_['retry_of']}" if run_.get("retry_of") else "")
        )
    return 0


@cli.command()
@click.argument("run_id")
@_state_options
@_NO_COLLECT
@click.option(
    "--results",
    "with_results",
    is_flag=True,
    help="Print every batch as a JSON line: its keys, fate, and result or error.",
)
def report(
    run_id: str,
    state: str,
    region: str | None,
    profile: str | None,
    as_json: bool,
    no_collect: bool,
    with_results: bool,
) -> int:
    """Show a run's counts and failures, from its ledger and its workers' outcomes.

    Exit code 0, 1 when an AWS call failed, 2 when --state or RUN_ID does not exist.
    """
    from hopper.runstate.record import report as build_report
    from hopper.runstate.record import results

    store = _store(state, region, profile)
    if not no_collect:
        _collect_first(store, region, profile)
    if with_results:
        for line in results(store, run_id):
            click.echo(json.dumps(line, default=str, ensure_ascii=False))
        return 0
    document = build_report(store, run_id)
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
        return 0
    ledger = document["ledger"]
    rows = [
        ("run", run_id),
        ("status", str(document["status"])),
        ("started", str(document["started_at"])),
        ("finished", str(document["finished_at"])),
        ("source", str(document["source"])),
        ("target", str(document["target"])),
        (
            "dispatched",
            f"{_count(ledger['items']['dispatched'], 'item')} in "
            f"{_count(ledger['batches']['dispatched'], 'batch')}",
        ),
        (
            "failed",
            f"{_count(ledger['items']['failed'], 'item')} in "
            f"{_count(ledger['batches']['failed'], 'batch')}",
        ),
        ("not dispatched", _count(ledger["items"]["not_dispatched"], "item")),
    ]
    rows.extend(_worker_rows(document, bool(document["tracking"])))
    rows.append(("cursor", str(document["cursor"])))
    if document["retry_of"]:
        rows.append(("retry of", document["retry_of"]))
    for event in document["events"]:
        rows.append((event["event"], str(event.get("reason") or event.get("cursor") or "")))
    for failure in document["failures"]:
        rows.append(
            (
                "failure",
                f"{failure['status']} batch {failure['batch']} {failure['keys']}: "
                f"{failure['error_type']}: {failure['error']}",
            )
        )
    if document["failures_omitted"]:
        rows.append(
            (
                "failure",
                f"+{document['failures_omitted']} more: "
                f"hopper report {run_id} --state {state} --results",
            )
        )
    _print_rows(f"hopper report {run_id}", rows)
    return 0


@cli.command()
@_state_options
@click.option(
    "--results-queue",
    metavar="URL|ARN",
    help="The queue to drain [default: those of the runs in --state still waiting].",
)
@click.option(
    "--seconds",
    default=COLLECT_SECONDS,
    show_default=True,
    type=float,
    help="Drain for at most this long.",
)
def collect(
    state: str,
    region: str | None,
    profile: str | None,
    as_json: bool,
    results_queue: str | None,
    seconds: float,
) -> int:
    """Store the workers' outcomes waiting in the results queue in their runs' ledgers.

    Each message is deleted once its outcome is stored; records of runs --state does not
    know, and messages that are no destination record, are counted and deleted. Exit code 0,
    1 when an AWS call failed, 2 on bad input.
    """
    from hopper import aws
    from hopper.runstate.tracking import collect_state

    if seconds <= 0:
        raise click.UsageError(f"--seconds must be greater than 0, got {seconds:g}")
    done = collect_state(
        _store(state, region, profile),
        session_for=lambda: aws.make_session(region=region, profile=profile),
        queue=results_queue,
        budget=seconds,
    )
    _print_mapping(done.to_dict(), as_json)
    return 0


@cli.command()
@click.argument("run_id")
@_state_options
@click.option(
    "--wait", is_flag=True, help="Wait for another run holding --state instead of exiting 3."
)
def retry(
    run_id: str, state: str, region: str | None, profile: str | None, as_json: bool, wait: bool
) -> int:
    """Dispatch again what RUN_ID left undone, as a new run: items that failed, were not
    dispatched, failed in their worker or were lost, and that no earlier retry has sent.

    Exit code as for run (0, 1, 2, 3 when another run holds --state, 130 on Ctrl-C); 0 with
    "nothing to retry" when nothing is left.
    """
    from hopper.runstate.record import load_run, retry_set

    store = _store(state, region, profile)
    previous = load_run(store, run_id)
    if previous is None:
        raise click.UsageError(f"no run {run_id!r} in {store.location}")
    items, complete = retry_set(store, run_id)
    if not items and complete:
        click.echo(
            f"nothing to retry: run {run_id} has no item left that failed, was not sent, "
            "failed in its worker or was lost",
            err=True,
        )
        return 0
    options = {
        k: v
        for k, v in previous.get("config", {}).items()
        if k not in ("start_after", "limit", "incremental")
    }
    config = RunConfig.from_mapping(
        {**options, "state": state, "region": region, "profile": profile}
    )
    summary = _run_once(config, wait=wait, retry_of=run_id, lines=not as_json)
    return _report_run(summary, as_json)


@cli.command()
@click.argument("expression")
@click.option(
    "--timezone",
    "zone",
    default="UTC",
    show_default=True,
    metavar="TZ",
    help="The IANA time zone whose wall clock cron() and at() read.",
)
@click.option(
    "--next",
    "count",
    default=5,
    show_default=True,
    metavar="N",
    help="How many fire times to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def schedule(expression: str, zone: str, count: int, as_json: bool) -> int:
    """Check a rate(...), cron(...) or at(...) EXPRESSION and print its next fire times, in
    --timezone and in UTC, as EventBridge Scheduler reads them across daylight-saving changes.

    Exit code 0, 2 when EXPRESSION or TZ is not one.
    """
    from datetime import UTC, datetime

    from hopper.schedule import next_fire_times, parse_schedule, parse_timezone

    if count <= 0:
        raise click.UsageError(f"--next must be greater than 0, got {count}")
    parsed = parse_schedule(expression)
    tz = parse_timezone(zone)
    times = next_fire_times(parsed, datetime.now(UTC), count, tz)
    utc = [t.isoformat().replace("+00:00", "Z") for t in times]
    local = [t.astimezone(tz).isoformat() for t in times]
    if as_json:
        document = {
            "expression": parsed.expression,
            "timezone": str(tz),
            "next": utc,
            "next_local": local,
        }
        click.echo(json.dumps(document))
    elif not times:
        click.echo("(never fires again)")
    else:
        for moment, in_utc in zip(times, utc, strict=True):
            click.echo(_local_time(moment, tz) + in_utc)
    return 0


def _local_time(moment: Any, tz: Any) -> str:
    """`2027-03-14 09:00 EDT (-04:00)  ` before the UTC time, or nothing for UTC."""
    if str(tz) == "UTC":
        return ""
    here = moment.astimezone(tz)
    offset = here.isoformat()[-6:]
    return f"{here:%Y-%m-%d %H:%M %Z} ({offset})  "


def _aws_options(func: F) -> F:
    return _stack(
        func,
        [
            click.option(
                "--stack-name",
                default="hopper",
                show_default=True,
                help="The CloudFormation stack (also names the function and the schedule).",
            ),
            click.option("--region", help="AWS region."),
            click.option("--profile", help="AWS named profile."),
        ],
    )


def _deployer(region: str | None, profile: str | None) -> Any:
    from hopper import aws
    from hopper.deploy import Deployer

    return Deployer(
        session=aws.make_session(region=region, profile=profile),
        progress=lambda line: click.echo(line, err=True),
    )


def _print_mapping(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for inner, inner_value in value.items():
                click.echo(f"  {inner}: {inner_value}")
        else:
            click.echo(f"{key}: {value}")


def _worker_options(func: F) -> F:
    return _stack(
        func,
        [
            click.option(
                "--worker",
                metavar="FILE.py:FUNC",
                help="Deploy this worker with the stack, from the file that runs locally "
                "(or python:MODULE:FUNC). Instead of --target.",
            ),
            click.option(
                "--requirements",
                metavar="FILE",
                type=click.Path(dir_okay=False),
                help="With --worker: its dependencies, installed as binary wheels for Python "
                "3.12 on arm64.",
            ),
            click.option(
                "--worker-memory",
                default=512,
                show_default=True,
                type=int,
                metavar="MB",
                help="With --worker: its memory.",
            ),
            click.option(
                "--worker-timeout",
                default=300,
                show_default=True,
                type=int,
                metavar="SECONDS",
                help="With --worker: its time limit per invocation.",
            ),
            click.option(
                "--worker-env",
                multiple=True,
                metavar="KEY=VALUE",
                help="With --worker: an environment variable (repeatable).",
            ),
            click.option(
                "--worker-reserved-concurrency",
                type=int,
                metavar="N",
                help="With --worker: concurrency reserved for it [default: none].",
            ),
            click.option(
                "--worker-policy",
                metavar="FILE.json",
                type=click.Path(dir_okay=False),
                help="With --worker: an IAM policy document its role gets too; it may only "
                "read the source prefix and write its logs otherwise.",
            ),
            click.option(
                "--worker-managed-policy",
                multiple=True,
                metavar="ARN",
                help="With --worker: a managed policy its role gets too (repeatable).",
            ),
        ],
    )


def _schedule_options(func: F) -> F:
    return _stack(
        func,
        [
            click.option(
                "--schedule",
                default="rate(15 minutes)",
                show_default=True,
                metavar="EXPR",
                help="rate(...), cron(...) or at(YYYY-MM-DDTHH:MM:SS).",
            ),
            click.option(
                "--timezone",
                default="UTC",
                show_default=True,
                metavar="TZ",
                help="The IANA time zone whose wall clock cron() and at() read.",
            ),
            click.option(
                "--schedule-disabled", is_flag=True, help="Create the schedule switched off."
            ),
            click.option(
                "--flexible-window",
                default=0,
                show_default=True,
                type=int,
                metavar="MINUTES",
                help="Let each run start up to this late (0-1440).",
            ),
            click.option(
                "--schedule-retries",
                default=3,
                show_default=True,
                type=int,
                help="Scheduler's retries of a start it could not deliver (0-185), before "
                "the dead-letter queue.",
            ),
            click.option(
                "--schedule-max-age",
                default=3600,
                show_default=True,
                type=int,
                metavar="SECONDS",
                help="How long Scheduler keeps trying to start one run (60-86400).",
            ),
            click.option(
                "--alarm-email",
                metavar="ADDRESS",
                help="Send the alarms here (a topic and an email subscription to confirm).",
            ),
            click.option("--alarm-topic", metavar="ARN", help="Send the alarms to this SNS topic."),
            click.option(
                "--on-new-inventory",
                is_flag=True,
                help="With an inventory:s3://… source: start a run when a new report lands, "
                "instead of on a schedule (turns on the bucket's EventBridge notifications).",
            ),
        ],
    )


@cli.command()
@click.option(
    "--source",
    required=True,
    metavar="s3://BUCKET[/PREFIX] | inventory:s3://…",
    help="The bucket (and prefix) to list, or the S3 Inventory reports to read.",
)
@click.option(
    "--target",
    metavar="FUNCTION",
    help="An existing worker Lambda function: NAME, lambda:NAME or ARN. Instead of --worker.",
)
@_worker_options
@_schedule_options
@click.option(
    "--artifact-bucket",
    metavar="BUCKET",
    help="Where the code packages go [default: the source bucket].",
)
@click.option(
    "--mode",
    default="objects",
    show_default=True,
    type=click.Choice(MODES),
    help="One item per object or per prefix.",
)
@click.option(
    "--batch-size", default=1, show_default=True, type=int, help="Items per worker invocation."
)
@click.option(
    "--concurrency", default=16, show_default=True, type=int, help="Worker invocations in flight."
)
@click.option(
    "--invocation-type",
    default="event",
    show_default=True,
    type=click.Choice(INVOCATION_TYPES),
    help="How workers are invoked.",
)
@click.option(
    "--memory", default=256, show_default=True, type=int, help="Memory of the hopper function, MB."
)
@click.option(
    "--timeout",
    default=300,
    show_default=True,
    type=int,
    help="Time limit of one hopper invocation, seconds.",
)
@click.option(
    "--max-hops", default=100, show_default=True, type=int, help="Continuations one run may make."
)
@click.option("--incremental", is_flag=True, help="Dispatch only new or changed objects each run.")
@click.option(
    "--max-failures", metavar="N|P%", help="Stop a run once more than N items (or P%) failed."
)
@click.option(
    "--track/--no-track",
    default=True,
    show_default=True,
    help="Learn each event invoke's own outcome: a results queue, and the worker's async "
    "config sending both outcomes there.",
)
@click.option(
    "--worker-retries",
    default=2,
    show_default=True,
    type=int,
    help="With --track: Lambda's retries of a failed worker invocation (0-2).",
)
@click.option(
    "--max-event-age",
    default=3600,
    show_default=True,
    type=int,
    metavar="SECONDS",
    help="With --track: how long an event may wait for the worker (60-21600).",
)
@_aws_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print the stack outputs as one JSON document."
)
def deploy(region: str | None, profile: str | None, as_json: bool, **options: Any) -> int:
    """Package hopper (and the --worker), upload, and create or update the stack: the hopper
    function, its schedule, alarms and, with --track, the results queue. Waits, then prints
    the outputs.

    Exit code 0; 1 when the stack or an AWS call failed; 2 on bad input, nothing created.
    """
    from hopper.deploy import DeployConfig

    options["schedule_enabled"] = not options.pop("schedule_disabled")
    options["worker_env"] = _pairs(options.pop("worker_env"))
    options["worker_managed_policies"] = tuple(options.pop("worker_managed_policy"))
    if options["worker_policy"] is not None:
        options["worker_policy"] = _json_file(options["worker_policy"], "--worker-policy")
    config = DeployConfig(**options)
    outputs = _deployer(region, profile).deploy(config)
    _print_mapping(outputs, as_json)
    return 0


def _pairs(texts: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--worker-env {text!r}: use KEY=VALUE")
        pairs[key] = value
    return pairs


def _json_file(path: str, option: str) -> Any:
    try:
        with Path(path).open(encoding="utf-8") as stream:
            return json.load(stream)
    except OSError as exc:
        raise click.UsageError(f"{option} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise click.UsageError(f"{option} {path}: not JSON ({exc})") from None


@cli.command()
@_aws_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(stack_name: str, region: str | None, profile: str | None, as_json: bool) -> int:
    """Show the stack: its schedule (time zone, on or off, next fire times), the last run,
    its queues, alarms and functions.

    Exit code 0, 1 when the stack is not deployed or an AWS call failed, 2 on bad input.
    """
    from hopper.deploy import validate_stack_name

    validate_stack_name(stack_name)
    report = _deployer(region, profile).status(stack_name)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    return 0 if report["status"] != "NOT_DEPLOYED" else 1


@cli.command(name="invoke")
@_aws_options
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as one JSON document.")
@click.option(
    "--wait-for-workers",
    type=float,
    metavar="SECONDS",
    help="Then wait this long, collecting, for every tracked batch's outcome; the exit code "
    "then counts the workers' failures and what is still pending.",
)
def invoke_(
    stack_name: str,
    region: str | None,
    profile: str | None,
    as_json: bool,
    wait_for_workers: float | None,
) -> int:
    """Run the deployed hopper now, synchronously, and print its summary.

    Exit code 0, 1 when the run failed (or, waiting, a worker failed or is still pending), 2
    on bad input.
    """
    from hopper.deploy import validate_stack_name

    validate_stack_name(stack_name)
    deployer = _deployer(region, profile)
    summary = deployer.invoke(stack_name)
    if wait_for_workers is not None:
        _wait_for_deployed_workers(deployer, stack_name, summary, wait_for_workers)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        keys = (
            "run_id", "status", "listed", "selected", "unchanged", "dispatched", "failed",
            "not_dispatched", "processed", "worker_failed", "pending", "lost", "tracking",
            "duration_s", "continued",
        )  # fmt: skip
        _print_mapping({key: summary.get(key) for key in keys if key in summary}, False)
        for failure in summary.get("failures", []):
            click.echo(
                f"{str(failure['status']).upper()} batch {failure['batch']} {failure['keys']}: "
                f"{failure['error_type']}: {failure['error']}"
            )
    failed = any(summary.get(key) for key in ("failed", "worker_failed", "lost"))
    if summary.get("waited") and summary.get("pending"):
        failed = True
    return 0 if summary.get("status") in ("succeeded", "incomplete") and not failed else 1


def _wait_for_deployed_workers(
    deployer: Any, stack_name: str, summary: dict[str, Any], seconds: float
) -> None:
    """Collect the stack's results queue into its state until the invoked run has no batch
    pending, or `seconds` pass; the summary then carries the workers' outcomes."""
    import time

    from hopper import aws
    from hopper.runstate.record import refresh
    from hopper.runstate.store import open_store
    from hopper.runstate.tracking import collect

    status = deployer.status(stack_name)
    queue = status.get("outputs", {}).get("ResultsQueueUrl")
    state = status.get("function", {}).get("Environment", {}).get("HOPPER_STATE")
    if not queue or not state:
        raise click.UsageError(
            f"--wait-for-workers: stack {stack_name} does not track its workers "
            "(deployed with --no-track)"
        )
    session = deployer.session
    store = open_store(state, session=session)
    sqs = aws.client(session, "sqs")
    deadline = time.monotonic() + seconds
    while True:
        collect(store, queue, sqs=sqs, budget=max(1.0, min(5.0, deadline - time.monotonic())))
        document = refresh(store, str(summary["run_id"]))
        if not document["pending"] or time.monotonic() >= deadline:
            break
    for key in ("dispatched", "failed", "not_dispatched", "processed", "worker_failed"):
        summary[key] = document[key]
    summary.update(
        pending=document["pending"],
        lost=document["lost"],
        status=document["status"],
        failures=document["failures"],
        waited=True,
    )


@cli.command()
@_aws_options
@click.option(
    "--artifact-bucket",
    metavar="BUCKET",
    help="Also clean artifacts here if the stack is already gone.",
)
@click.option(
    "--purge-state",
    is_flag=True,
    help="Also delete the runs' state (s3://SOURCE_BUCKET/_hopper/state/): ledgers, "
    "checkpoints and incremental state.",
)
def destroy(
    stack_name: str,
    region: str | None,
    profile: str | None,
    artifact_bucket: str | None,
    purge_state: bool,
) -> int:
    """Delete the stack (functions, schedule, queues, alarms, logs) and its uploaded packages,
    and wait; say what stays. Nothing to delete is success.

    Exit code 0, 1 when a deletion failed, 2 on bad input.
    """
    from hopper.deploy import validate_stack_name

    validate_stack_name(stack_name)
    done = _deployer(region, profile).destroy(stack_name, artifact_bucket, purge_state=purge_state)
    click.echo("\n".join(f"removed {thing}" for thing in done.removed) or "nothing to remove")
    for thing in done.kept:
        click.echo(f"kept {thing}")
    return 0


@cli.command()
@_aws_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until Ctrl-C.")
@click.option(
    "--since",
    default="10m",
    show_default=True,
    metavar="AGE|TIME",
    help="From this long ago (30s, 10m, 1h, 2d) or this time (2026-11-30T09:00:00Z).",
)
@click.option("--run", "run_id", metavar="RUN_ID", help="Only the records that name this run.")
@click.option("--worker", is_flag=True, help="The worker's logs instead of the hopper's.")
def logs(
    stack_name: str,
    region: str | None,
    profile: str | None,
    follow: bool,
    since: str,
    run_id: str | None,
    worker: bool,
) -> int:
    """Print the hopper function's (or the worker's) log records, one line each, oldest first.

    With --run, only records that name the run: the hopper's own name it in each hop's first
    and last line and in its metrics; a worker's name it if the worker logs
    event["hopper"]["run_id"], as examples/worker.py does.

    Exit code 0, 1 when an AWS call failed or the stack is not deployed, 2 on bad input, 130
    on Ctrl-C.
    """
    from hopper.deploy import validate_stack_name
    from hopper.logs import events, format_event, parse_since, run_pattern

    validate_stack_name(stack_name)
    start = parse_since(since)
    deployer = _deployer(region, profile)
    group = deployer.log_group(stack_name, worker=worker)
    client = deployer.client("logs")
    pattern = run_pattern(run_id) if run_id else None
    shown = 0
    # Ctrl-C ends --follow the way it ends `tail -f`: quietly, with 130.
    with _interruptible(say=lambda: None) as stop:
        for event in events(client, group, since=start, pattern=pattern, follow=follow, stop=stop):
            click.echo(format_event(event))
            shown += 1
    if stop.is_set():
        return EXIT_INTERRUPTED
    if not shown:
        what = f" of run {run_id}" if run_id else ""
        click.echo(f"no log records{what} in {group} since {start.isoformat()}", err=True)
    return 0


@cli.command()
def template() -> int:
    """Print the CloudFormation template that `deploy` uses. Exit code 0."""
    from hopper.deploy import template_text

    click.echo(template_text(), nl=False)
    return 0


# --------------------------------------------------------------------------------- output


_RUN_COUNTS = (
    "dispatched", "failed", "not_dispatched", "processed", "worker_failed", "pending", "lost"
)  # fmt: skip


def _print_status(report: dict[str, Any]) -> None:
    """`hopper status` for a person: one labelled line per part, the details indented."""

    def row(label: str, text: str) -> None:
        click.echo(f"{label:<13}{text}")

    def failed(part: Any) -> str | None:
        if isinstance(part, dict) and ("error" in part or "missing" in part):
            return str(part.get("error") or part.get("missing"))
        return None

    def function(part: Any) -> str:
        problem = failed(part)
        if problem:
            return f"error: {problem}"
        return (
            f"{part.get('FunctionName')} ({part.get('Runtime')}, {part.get('MemorySize')} MB, "
            f"{part.get('Timeout')} s, {part.get('State')})"
        )

    row("stack", f"{report['stack']}  {report['status']}")
    if report["status"] == "NOT_DEPLOYED":
        return
    row("updated", str(report.get("updated")))
    row("source", str(report.get("source")))
    row("hopper", function(report.get("function")))
    row("worker", function(report["worker"]) if "worker" in report else str(report.get("target")))
    schedule = report.get("schedule") or {}
    problem = failed(schedule)
    if problem:
        row("schedule", problem)
    elif "rule" in schedule:
        row("schedule", f"{schedule['trigger']}, {str(schedule['state']).lower()}")
        row("  rule", str(schedule["rule"]))
    else:
        state = "on" if schedule.get("enabled") else "off"
        window = schedule.get("flexible_window_minutes") or 0
        row(
            "schedule",
            f"{schedule.get('expression')} in {schedule.get('timezone')}, {state}"
            + (f", up to {window} min late" if window else ""),
        )
        if schedule.get("drift"):
            row("  warning", str(schedule["drift"]))
        for i, moment in enumerate(schedule.get("next", [])):
            local = moment["local"]
            shown = local if schedule.get("timezone") != "UTC" else ""
            row("  next" if i == 0 else "", f"{shown + '  ' if shown else ''}{moment['utc']}")
    run_ = report.get("last_run")
    if run_ is None:
        row("last run", "none yet")
    elif failed(run_):
        row("last run", f"error: {failed(run_)}")
    else:
        row(
            "last run",
            f"{run_.get('run_id')}  {run_.get('status')}  started {run_.get('started_at')}",
        )
        counts = ", ".join(
            f"{key.replace('_', ' ')} {run_[key]}" for key in _RUN_COUNTS if key in run_
        )
        row("", counts)
    for label, queue in (report.get("queues") or {}).items():
        name = label.replace("_", " ")
        problem = failed(queue)
        row(
            name,
            f"error: {problem}"
            if problem
            else f"{queue['messages']} waiting, {queue['in_flight']} in flight  {queue['url']}",
        )
    alarms = report.get("alarms")
    if failed(alarms):
        row("alarms", f"error: {failed(alarms)}")
    else:
        for i, alarm in enumerate(alarms or []):
            row("alarms" if i == 0 else "", f"{alarm['state']:<18}{alarm['name']}")
    row("state", str(report.get("state")))


def _print_run(summary: RunSummary) -> None:
    """The summary table; the results and failures were printed as they arrived."""
    c = summary.counts
    rows = [
        ("run", summary.run_id),
        ("status", summary.status),
        ("source", f"{summary.source} ({summary.mode})"),
        ("target", summary.target),
        ("listed", str(c.listed)),
        ("skipped", str(c.skipped)),
        ("selected", str(c.selected)),
    ]
    if c.unchanged:
        rows.append(("unchanged", str(c.unchanged)))
    rows += [
        ("batches", str(c.batches)),
        (
            "dispatched",
            f"{_count(c.dispatched, 'item')} in {_count(c.dispatched_batches, 'batch')}",
        ),
        ("failed", f"{_count(c.failed, 'item')} in {_count(c.failed_batches, 'batch')}"),
        ("not dispatched", str(c.not_dispatched)),
    ]
    rows.extend(_worker_rows(vars(c), summary.tracking))
    if summary.segments > 1:
        rows.append(
            (
                "segments",
                f"{summary.segments}: what was dispatched and after counts them all; "
                "listed, selected and batches, this one",
            )
        )
    rows.append(("duration", f"{summary.duration_s:.2f}s"))
    if summary.stopped:
        rows.append(("stopped", summary.stopped))
    if summary.cursor is not None:
        rows.append(("resume with", f"--start-after {json.dumps(summary.cursor)}"))
    for skip in summary.skipped:
        rows.append(("skipped", f"{_printable(skip['key'])}: {skip['reason']}"))
    _print_rows(f"hopper run {summary.run_id}", rows, err=True)


def _worker_rows(counts: dict[str, Any], tracking: bool) -> list[tuple[str, str]]:
    """What the workers made of the dispatched items, as far as it is known."""
    if not tracking:
        return [("workers", "not tracked: event invokes report no outcome (--results-queue)")]
    rows = [
        ("processed", str(counts["processed"])),
        ("worker failed", str(counts["worker_failed"])),
    ]
    for name in ("pending", "lost"):
        if counts[name]:
            rows.append((name, str(counts[name])))
    return rows


def _outcome_line(outcome: Outcome) -> str | None:
    """One line for a result or a failure, keys first; None for what has neither."""
    keys = ", ".join(_printable(key) for key in outcome.batch.keys[:KEYS_SHOWN])
    more = len(outcome.batch.items) - KEYS_SHOWN
    if more > 0:
        keys += f" (+{more} more)"
    if outcome.failed or (outcome.status is NOT_DISPATCHED and outcome.error_type):
        state = outcome.worker if outcome.worker is WORKER_FAILED else outcome.status
        return (
            f"{state.upper()} batch {outcome.batch.index} [{keys}]: "
            f"{outcome.error_type}: {outcome.error}"
        )
    if outcome.result is None:
        return None
    return f"{keys}\t{json.dumps(outcome.result, default=str, ensure_ascii=False)}"


def _print_plan(summary: PlanSummary) -> None:
    cost = summary.to_dict()["estimated_cost_usd"]
    lambda_target = not _is_local(summary.target)
    batches = f"min {summary.min_batch_items}, mean {summary.mean_batch_items}"
    largest = f"{_count(summary.largest_payload_bytes, 'byte')}"
    if summary.largest_payload_batch is not None:
        largest += f" (batch {summary.largest_payload_batch})"
    if lambda_target:
        largest += f"; Lambda's limit: {_count(summary.payload_limit, 'byte')}"
    rows = [
        ("source", f"{summary.source} ({summary.mode})"),
        (
            "target",
            f"{summary.target or '-'}"
            + (f" ({summary.invocation_type})" if lambda_target else " (local)"),
        ),
        ("listed", str(summary.listed)),
        ("skipped", str(summary.skipped)),
        ("selected", str(summary.selected)),
    ]
    if summary.unchanged:
        rows.append(("unchanged", str(summary.unchanged)))
    rows += [
        ("invocations", str(summary.invocations)),
        ("items per batch", f"{batches}, max {summary.max_batch_items}"),
        ("largest event", largest),
    ]
    if lambda_target:
        lambda_price = cost["lambda_price_per_million_requests"]
        rows += [
            ("too large to send", str(summary.oversize)),
            ("est. Lambda requests", f"${cost['lambda_requests']:.6f} at ${lambda_price}/1M"),
        ]
        if summary.invocation_type == "event":
            sqs_price = cost["sqs_price_per_million_requests"]
            rows.append(
                (
                    "est. tracking (SQS)",
                    f"${cost['sqs_tracking_requests']:.6f} at ${sqs_price}/1M "
                    "(with --results-queue: 1.2 requests per batch)",
                )
            )
    if summary.source.startswith("s3://"):
        list_price = cost["s3_list_price_per_thousand_requests"]
        fingerprints = (
            f" (of them, {summary.fingerprint_objects} objects listed to fingerprint datasets)"
            if summary.fingerprint_objects
            else ""
        )
        rows.append(
            (
                "est. S3 LIST",
                f"${cost['s3_list_requests']:.6f} at ${list_price}/1k{fingerprints}",
            )
        )
    if summary.inventory:
        inv = summary.inventory
        rows += [
            ("report", f"{inv['report']} ({inv['format']}, {_count(inv['files'], 'file')})"),
            ("report date", f"{inv['created']}, {inv['age_hours']} hours old"),
            (
                "report rows",
                f"{inv['rows']}: {inv['current_objects']} current, {inv['skipped_rows']} "
                "skipped (delete markers and older versions)",
            ),
            ("est. S3 GET", f"${inv['read_usd']:.6f} to read the report"),
            (
                "listing instead",
                f"{_count(inv['listing_instead_requests'], 'LIST request')}, "
                f"${inv['listing_instead_usd']:.6f}",
            ),
        ]
    for item in summary.oversize_items:
        rows.append(("too large", f"{_printable(item['key'])}: {item['reason']}"))
    shown = summary.first_keys[:10]
    for key in shown:
        rows.append((f"first {len(shown)} keys", _printable(key)))
    _print_rows("hopper plan (nothing invoked)", rows)


def _is_local(target: str | None) -> bool:
    return target is not None and RunConfig(source=".", target=target).is_local_target


def _count(n: int, noun: str) -> str:
    """`1 item`, `3 items`, `1 batch`, `2 batches`."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun}es" if noun.endswith(("s", "sh", "ch", "x")) else f"{n} {noun}s"


def _printable(text: str) -> str:
    """The text on one line: a key may hold a newline or a tab, which are shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_rows(title: str, rows: list[tuple[str, str]], *, err: bool = False) -> None:
    """A titled table of rows on stdout, or on stderr (`err`): drawn when that stream is a
    terminal, as plain `name  value` lines otherwise."""
    stream = sys.stderr if err else sys.stdout
    # A label said once for a run of rows that share it (the first keys, items too large).
    rows = [
        ("" if i and name == rows[i - 1][0] else name, value)
        for i, (name, value) in enumerate(rows)
    ]
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for name, value in rows:
            table.add_row(name, value)
        Console(stderr=err, highlight=False).print(table)
        return
    click.echo(title, err=err)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"  {name.ljust(width)}  {value}", err=err)


class _Watch(RunHooks):
    """What the CLI shows while a run goes: each result and failure on stdout as it arrives
    (`lines`), and on stderr, when it is a terminal, a live line: counts while the listing
    streams, then a bar with the total, the rate and the time left once the total is known.
    Lines printed while the bar is up go above it."""

    def __init__(self, *, progress: bool, lines: bool) -> None:
        self.lines = lines
        self.progress: Any = None
        self._summary: RunSummary | None = None
        self._total: int | None = None
        self._started = 0.0
        if progress:
            import time

            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._started = time.monotonic()
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True, highlight=False),
                transient=True,
            )
            self._task = self.progress.add_task("listing", total=None)
            self.progress.start()

    def count_in_background(self, config: RunConfig) -> None:
        import threading

        def count() -> None:
            try:
                self._total = runner.count(config)
            except Exception:  # noqa: BLE001 - the bar then stays a counter; the run reports
                return

        threading.Thread(target=count, name="hopper-count", daemon=True).start()

    def _echo(self, line: str, *, err: bool = False) -> None:
        if self.progress is not None and (err or sys.stdout.isatty()):
            # Above the live bar, on a line of its own.
            self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            click.echo(line, err=err)

    def on_outcome(self, outcome: Outcome) -> None:
        if self.lines:
            line = _outcome_line(outcome)
            if line is not None:
                self._echo(line)

    def on_progress(self, summary: RunSummary) -> None:
        self._summary = summary
        if self.progress is None:
            return
        import time

        c = summary.counts
        done = c.dispatched + c.failed + c.unchanged
        elapsed = max(time.monotonic() - self._started, 1e-3)
        failed = c.failed + c.worker_failed
        if self._total is None:
            text = f"listed {c.listed}  selected {c.selected}  dispatched {c.dispatched}"
            self.progress.update(self._task, description=f"{text}  failed {failed}")
            return
        self.progress.update(
            self._task,
            total=self._total,
            completed=done,
            description=f"{done}/{self._total} items  {done / elapsed:,.0f}/s  failed {failed}",
        )

    def stopping(self) -> None:
        """Ctrl-C: say what happens now."""
        flying = self._summary.in_flight if self._summary is not None else 0
        if flying:
            what = f"after the {_count(flying, 'batch')} in flight"
        else:
            what = "now: nothing is in flight"
        self._echo(f"hopper: stopping {what} (Ctrl-C again to abort)", err=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    return int(cli.main(args=argv, prog_name="hopper", standalone_mode=False))


if __name__ == "__main__":
    sys.exit(main())
