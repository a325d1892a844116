"""``quart scheduler …``: see and steer the jobs from a shell, and run a scheduler-only worker.

Every command but ``worker`` opens the app's job stores and run history without starting
the scheduler (:meth:`APScheduler.open_stores`), so it works while a server runs the same
persistent stores. ``--json`` prints what the REST API would answer; errors go to stderr
with a non-zero exit status (2 for usage errors, as click does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import click
from quart.cli import ScriptInfo

from . import _json
from ._coordination.backend import CoordinationUnavailableError
from ._history import OUTCOMES, RUNNING
from .errors import (
    HistoryUnavailableError,
    JobLookupError,
    JobStoreUnavailableError,
    MaxInstancesReachedError,
    QuartSchedError,
)

if TYPE_CHECKING:
    from apscheduler.job import Job
    from quart import Quart

    from ._extension import APScheduler

T = TypeVar("T")

MAX_NEXT_RUN_TIMES = 100
MAX_HISTORY = 500
#: What a write from here cannot promise about a server that runs the same store.
PICKUP_NOTE = (
    "A server running this job store sees it when it next reads the store: at its next "
    "wake-up (the next run of any job it knows of)."
)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON, as the REST API answers, for scripts."
)


# ------------------------------------------------------------------------------ plumbing


class CommandError(click.ClickException):
    """A failure a shell user should read: ``Error: <message>`` on stderr, exit 1."""


def _load(ctx: click.Context) -> tuple[Quart, APScheduler]:
    """The app ``quart --app`` names, and its extension."""
    from ._extension import EXTENSION_KEY

    info = ctx.ensure_object(ScriptInfo)
    try:
        app = info.load_app()
    except click.ClickException:
        raise
    except Exception as exc:
        raise CommandError(f"the app cannot be loaded: {type(exc).__name__}: {exc}") from exc
    ext = app.extensions.get(EXTENSION_KEY)
    if ext is None:
        raise CommandError(
            f"app {app.name!r} has no APScheduler: call APScheduler(app) or "
            "scheduler.init_app(app) where the app is made"
        )
    return app, ext


def _run(
    ctx: click.Context, body: Callable[[APScheduler], Awaitable[T]], job_id: str | None = None
) -> T:
    """Run ``body(ext)`` on a fresh loop, in the app context, with the stores open;
    ``job_id`` names the job the command is about, for the message when there is none."""
    app, ext = _load(ctx)

    async def main() -> T:
        async with app.app_context(), ext.open_stores():
            return await body(ext)

    try:
        return asyncio.run(main())
    except click.ClickException:
        raise
    except JobLookupError as exc:
        raise CommandError(f"no job with id {job_id!r}") from exc
    except (JobStoreUnavailableError, HistoryUnavailableError) as exc:
        raise CommandError(str(exc)) from exc
    except QuartSchedError as exc:
        raise CommandError(f"{type(exc).__name__}: {exc}") from exc


async def _get_job(ext: APScheduler, job_id: str) -> Job:
    job = await ext.aget_job(job_id)
    if job is None:
        raise JobLookupError(job_id)
    return job


def _echo_json(value: Any) -> None:
    click.echo(_json.dumps(value))


def _when(value: str | None) -> str:
    """An ISO 8601 time from the JSON, shown to the second."""
    if value is None:
        return "-"
    return datetime.fromisoformat(value).isoformat(sep=" ", timespec="seconds")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a job's name or error message must not
    move the cursor or recolour the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _job_state(data: dict[str, Any], running: Collection[str] = ()) -> str:
    if data.get("load_error"):
        return "unloadable"
    if data["id"] in running or data.get("running_instances"):
        return "running"
    return "paused" if data["next_run_time"] is None else "scheduled"


async def _running_job_ids(ext: APScheduler) -> set[str]:
    """Jobs with a run under way in any process that records in the same history."""
    if ext.history is None:
        return set()
    try:
        return {run["job_id"] for run in await ext.get_running_runs()}
    except HistoryUnavailableError:
        return set()


def _trigger(job: Job, data: dict[str, Any]) -> str:
    """The trigger in words when the job JSON has them, else APScheduler's own text."""
    return str(data.get("trigger_description") or job.trigger)


def _last(data: dict[str, Any]) -> str:
    run = data.get("last_run")
    if not run:
        return "-"
    text = f"{run['outcome']} {_when(run['started_at'] or run['finished_at'])}"
    return text if run["duration"] is None else f"{text} ({_seconds(run['duration'])})"


# ------------------------------------------------------------------------------ commands


@click.group("scheduler")
def scheduler_cli() -> None:
    """See and steer the app's scheduled jobs (quart_sched).

    Works while the server runs, on the same persistent job store: changes reach the
    server when it next reads the store.
    """


@scheduler_cli.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List every job: trigger, next run, last run, state."""

    async def body(ext: APScheduler) -> None:
        jobs = await ext.aget_jobs()
        data = await ext.jobs_to_dicts(jobs)
        if as_json:
            _echo_json(data)
            return
        if not data:
            click.echo("No jobs.")
            return
        running = await _running_job_ids(ext)
        rows = [
            [
                item["id"],
                _trigger(job, item),
                _when(item["next_run_time"]),
                _job_state(item, running),
                _last(item),
            ]
            for job, item in zip(jobs, data, strict=True)
        ]
        _table(["ID", "TRIGGER", "NEXT RUN", "STATE", "LAST RUN"], rows)

    _run(ctx, body)


def _show(
    job: Job, data: dict[str, Any], next_times: list[datetime], running: Collection[str]
) -> None:
    fields: list[tuple[str, str]] = [
        ("id", data["id"]),
        ("name", data["name"]),
        ("func", str(data["func"])),
        ("trigger", _trigger(job, data)),
        ("state", _job_state(data, running)),
        ("next run", _when(data["next_run_time"])),
    ]
    if len(next_times) > 1:
        fields.append(("then", ", ".join(_when(t.isoformat()) for t in next_times[1:])))
    if data.get("load_error"):
        fields.append(("load error", data["load_error"]))
    fields += [
        (
            "misfire grace",
            "none" if data["misfire_grace_time"] is None else f"{data['misfire_grace_time']} s",
        ),
        ("max instances", str(data["max_instances"])),
    ]
    if data["args"]:
        fields.append(("args", _json.dumps(data["args"])))
    if data["kwargs"]:
        fields.append(("kwargs", _json.dumps(data["kwargs"])))
    run = data.get("last_run")
    fields.append(("last run", _last(data)))
    if run and run.get("error"):
        fields.append(("last error", run["error"]))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name + ':':<{width + 1}} {_printable(value)}")


@scheduler_cli.command("show")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def show_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job."""

    async def body(ext: APScheduler) -> None:
        job = await _get_job(ext, job_id)
        data = (await ext.jobs_to_dicts([job]))[0]
        if as_json:
            _echo_json(data)
        else:
            times = ext.next_run_times(job, 3) if data["next_run_time"] else []
            _show(job, data, times, await _running_job_ids(ext))

    _run(ctx, body, job_id)


@scheduler_cli.command("run")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def run_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Run a job once now, in this process, with the app context.

    The run is recorded in the run history; its schedule is not changed. Exits 1 if the
    job raised.
    """

    async def body(ext: APScheduler) -> None:
        job = await _get_job(ext, job_id)
        started = datetime.now(timezone.utc)
        try:
            await ext.submit_run(job)
        except MaxInstancesReachedError:
            raise CommandError(f"job {job_id!r} is already running (max_instances)") from None
        except Exception as exc:  # the job's own failure; the executor logged it
            failure: Exception | None = exc
        else:
            failure = None
        elapsed = (datetime.now(timezone.utc) - started).total_seconds()
        # The API's answer to POST /jobs/<id>/run: the job, its last_run now this one.
        data = (await ext.jobs_to_dicts([job]))[0]
        if as_json:
            _echo_json(data)
        elif failure is None:
            click.echo(f"Job {job_id!r} ran: success in {_seconds(elapsed)}")
        if failure is not None:
            message = _printable(f"{type(failure).__name__}: {failure}")
            raise CommandError(f"job {job_id!r} failed: {message}")

    _run(ctx, body, job_id)


@scheduler_cli.command("pause")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def pause_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Pause a job: it does not run until resumed."""

    async def body(ext: APScheduler) -> None:
        job = await ext.apause_job(job_id)
        if as_json:
            _echo_json((await ext.jobs_to_dicts([job]))[0])
        else:
            click.echo(f"Paused job {job_id!r}. {PICKUP_NOTE}")

    _run(ctx, body, job_id)


@scheduler_cli.command("resume")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def resume_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Resume a paused job (one whose schedule has ended is removed)."""

    async def body(ext: APScheduler) -> None:
        job = await ext.aresume_job(job_id)
        if as_json:
            _echo_json(None if job is None else (await ext.jobs_to_dicts([job]))[0])
        elif job is None:
            click.echo(f"Job {job_id!r} had no run left: removed. {PICKUP_NOTE}")
        else:
            click.echo(
                f"Resumed job {job_id!r}: next run {_when(_json.isoformat(job.next_run_time))}."
                f" {PICKUP_NOTE}"
            )

    _run(ctx, body, job_id)


@scheduler_cli.command("remove")
@click.argument("job_id", metavar="ID")
@json_option
@click.pass_context
def remove_command(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Remove a job from its job store (its run history stays)."""

    async def body(ext: APScheduler) -> None:
        job = await _get_job(ext, job_id)
        data = (await ext.jobs_to_dicts([job]))[0] if as_json else None
        await ext.aremove_job(job_id)
        if as_json:
            _echo_json(data)  # the job as it was
        else:
            click.echo(f"Removed job {job_id!r}. {PICKUP_NOTE}")

    _run(ctx, body, job_id)


def _parse_after(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date-time, e.g. 2030-01-01T08:00:00+01:00",
            param_hint="'--after'",
        ) from None
    return parsed


@scheduler_cli.command("next")
@click.argument("job_id", metavar="ID")
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, MAX_NEXT_RUN_TIMES),
    default=5,
    show_default=True,
    help="How many fire times.",
)
@click.option(
    "--after",
    metavar="ISO",
    help="Start from this date-time instead of now (no offset: the scheduler's zone).",
)
@json_option
@click.pass_context
def next_command(
    ctx: click.Context, job_id: str, count: int, after: str | None, as_json: bool
) -> None:
    """The next fire times of a job's trigger (a paused job's: if it were resumed)."""
    start = _parse_after(after)

    async def body(ext: APScheduler) -> None:
        job = await _get_job(ext, job_id)
        moment = start
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=ext.scheduler.timezone)
        times = ext.next_run_times(job, count, after=moment)
        if as_json:
            _echo_json({"id": job.id, "next_run_times": [_json.isoformat(t) for t in times]})
        elif not times:
            click.echo(f"Job {job_id!r} will not fire again.")
        else:
            for moment_ in times:
                click.echo(moment_.isoformat(sep=" "))

    _run(ctx, body, job_id)


def _outcomes(values: tuple[str, ...]) -> list[str] | None:
    known = sorted({*OUTCOMES, RUNNING})
    outcomes = [o.strip() for value in values for o in value.split(",") if o.strip()]
    for outcome in outcomes:
        if outcome not in known:
            raise click.BadParameter(
                f"unknown outcome {outcome!r}; use: {', '.join(known)}",
                param_hint="'--outcome'",
            )
    return outcomes or None


@scheduler_cli.command("history")
@click.argument("job_id", metavar="[ID]", required=False)
@click.option(
    "--outcome",
    multiple=True,
    metavar="OUTCOME",
    help=f"Only runs with this outcome ({', '.join((*OUTCOMES, RUNNING))}); "
    "repeat it or separate with commas.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_HISTORY),
    default=20,
    show_default=True,
    help="How many runs, newest first.",
)
@json_option
@click.pass_context
def history_command(
    ctx: click.Context, job_id: str | None, outcome: tuple[str, ...], limit: int, as_json: bool
) -> None:
    """Recorded runs, newest first, of one job or of all (removed jobs' too)."""
    outcomes = _outcomes(outcome)

    async def body(ext: APScheduler) -> None:
        page = await ext.get_runs(job_id, limit=limit, outcome=outcomes)
        if as_json:
            _echo_json(page.runs)
            return
        if not page.runs:
            click.echo("No runs recorded.")
            return
        rows = [
            [
                _when(run["started_at"] or run["finished_at"]),
                run["job_id"],
                run["outcome"],
                _seconds(run["duration"]),
                run["error"] or "",
            ]
            for run in page.runs
        ]
        _table(["STARTED", "JOB", "OUTCOME", "DURATION", "ERROR"], rows)

    _run(ctx, body)


# ----------------------------------------------------------------------------- check


@scheduler_cli.command("check")
@json_option
@click.pass_context
def check_command(ctx: click.Context, as_json: bool) -> None:
    """Check the setup for a deploy: exit 1 and say what is wrong, or print a summary.

    Loads the app and its SCHEDULER_* config (which imports every declared job's
    function and builds its trigger), reaches every job store and opens the run history.
    """
    problems: list[str] = []
    summary: dict[str, Any] = {}
    try:
        app, ext = _load(ctx)
    except click.ClickException as exc:
        problems.append(exc.format_message())
    else:
        try:
            summary = asyncio.run(_check(app, ext, problems))
        except JobStoreUnavailableError as exc:
            cause = exc.__cause__ or exc
            cause = getattr(cause, "orig", None) or cause  # SQLAlchemy's wraps the driver's
            problems.append(f"the job stores cannot be opened: {type(cause).__name__}: {cause}")
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    if as_json:
        _echo_json({"ok": not problems, "problems": problems, **summary})
    elif not problems:
        stores = ", ".join(f"{alias} ({kind})" for alias, kind in summary["jobstores"].items())
        history = summary["history"] or "off"
        coordination = summary["coordination"]
        coordinated = "off"
        if coordination is not None:
            leader = coordination.get("leader")
            led = f"{leader['host']} pid {leader['pid']}" if leader else "nobody"
            coordinated = f"{coordination['backend']} (leader: {led})"
        click.echo(
            f"OK: {summary['jobs']} declared job(s); job stores: {stores}; history: {history}; "
            f"coordination: {coordinated}"
        )
    else:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
    if problems:
        ctx.exit(1)


async def _check(app: Quart, ext: APScheduler, problems: list[str]) -> dict[str, Any]:
    declared = ext.get_jobs()  # not started: the jobs of code and config, as loaded
    for job in declared:
        paused = getattr(job, "next_run_time", True) is None
        if not paused and not ext.next_run_times(job, 1):
            problems.append(f"job {job.id!r} never fires: its trigger has no time left")
    kinds: dict[str, str] = {}
    async with app.app_context(), ext.open_stores():
        reachable = True
        for alias, (kind, problem) in ext.probe_stores().items():
            kinds[alias] = kind
            if problem is not None:
                reachable = False
                problems.append(f"job store {alias!r} cannot be reached: {problem}")
        if reachable:  # the stored jobs: their functions and arguments must load
            for job in await ext.aget_jobs():
                error = ext.job_to_dict(job).get("load_error")
                if error:
                    problems.append(f"stored job {job.id!r} cannot be loaded: {error}")
        history = ext.history
        if history is not None:
            try:
                await ext.get_runs(limit=1)
            except HistoryUnavailableError as exc:
                problems.append(str(exc))
    return {
        "jobs": len(declared),
        "jobstores": kinds,
        "history": history.location if history is not None else None,
        "coordination": await _check_coordination(ext, problems),
    }


async def _check_coordination(ext: APScheduler, problems: list[str]) -> dict[str, Any] | None:
    """The coordination backend SCHEDULER_COORDINATION chooses, and who leads now."""
    plan = ext.scheduler.plan_coordination()
    if plan is None or plan.kind == "off":
        return None
    shown: dict[str, Any] = {"backend": plan.kind, "location": plan.shown_location}
    try:
        lease = await ext.scheduler.read_leader()
    except CoordinationUnavailableError as exc:
        problems.append(f"the coordination backend cannot be reached: {exc}")
        return shown
    except ImportError as exc:
        problems.append(
            f"coordination through {plan.kind} needs its extra: "
            f"pip install 'quart-sched[{plan.kind}]' ({exc})"
        )
        return shown
    shown["leader"] = None if lease is None else lease.as_json()
    return shown


# ---------------------------------------------------------------------------- worker


@scheduler_cli.command("worker")
@json_option
@click.pass_context
def worker_command(ctx: click.Context, as_json: bool) -> None:
    """Run the scheduler without an HTTP server, until SIGTERM or SIGINT (Ctrl+C).

    The app's serving lifecycle runs as under a server (before_serving, after_serving);
    on a signal, running jobs get SCHEDULER_SHUTDOWN_TIMEOUT seconds to finish, then it
    exits 0. With --json it prints one JSON line when started and one when stopped.
    """
    app, ext = _load(ctx)
    if not logging.getLogger().handlers:  # the app set up no logging: say what runs
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    asyncio.run(_worker(app, ext, as_json))


async def _worker(app: Quart, ext: APScheduler, as_json: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.startup()
    try:
        if not ext.running:
            # The app asked for no start() (a web app that leaves jobs to this worker):
            # running the scheduler is what the worker is for.
            ext.start()
        if not ext.running:
            raise CommandError(
                f"host {ext.host_name!r} may not run jobs: it is not in SCHEDULER_ALLOWED_HOSTS"
            )
        jobs = len(await ext.aget_jobs())
        role = (await ext.leadership())["role"]
        if as_json:
            _echo_json({"event": "started", "pid": os.getpid(), "jobs": jobs, "role": role})
        else:
            click.echo(
                f"Scheduler worker running {jobs} job(s), pid {os.getpid()} ({role})", err=True
            )
        sys.stdout.flush()
        await stop.wait()
        if not as_json:
            click.echo("Stopping: letting running jobs finish", err=True)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await app.shutdown()
    if as_json:
        _echo_json({"event": "stopped"})
