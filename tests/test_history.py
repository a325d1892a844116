"""Run history: every run recorded in a real SQLite file, and readable back.

* each outcome (success, error, missed, skipped, interrupted) is recorded with its fields,
  for coroutine and plain-function jobs, for fires and for ``run_job``;
* a run is recorded as ``running`` before the job's code runs;
* a worker killed mid-run leaves its run ``running`` in a consistent file, and the next
  process on that file marks it interrupted; another history of the same process does not;
* retention (runs per job, days) and queries (pages, cursors, filters, last run), in
  Python and over the REST API, auth included;
* a corrupted, locked or too new file costs the history, never the jobs; ``False`` and
  ``":memory:"`` work; a graceful stop writes every run; ``run_finished`` fires once a run.

The files are real SQLite files in ``tmp_path``, read back with :mod:`sqlite3` directly.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing, suppress
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from apps.harness import python
from quart import Quart, current_app

from quart_sched import APScheduler, _history
from quart_sched._history import SCHEMA_VERSION, RunHistory
from quart_sched.auth import HTTPBasicAuth
from quart_sched.errors import HistoryUnavailableError
from quart_sched.signals import job_executed, run_finished

from history_support import postgres_schema
from support import free_port, wait_until

APPS = Path(__file__).parent / "apps"
T = TypeVar("T")
_names = itertools.count()
FINAL = {"success", "error", "missed", "skipped", "interrupted"}
GARBAGE = b"this is not a SQLite database\n" * 200


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "h.sqlite"


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SCHEDULER_HISTORY for the behaviours every backend shares: a SQLite file, or a
    PostgreSQL schema of the test's own (see tests/history_support.py)."""
    if request.param == "sqlite":
        yield str(tmp_path / "h.sqlite")
        return
    with postgres_schema() as url:
        yield url


def make_app(history: Path | str | bool, **config: Any) -> tuple[Quart, APScheduler]:
    """A fresh app recording its runs in ``history``, and its extension."""
    app = Quart(f"history_app_{next(_names)}")
    app.config["SCHEDULER_HISTORY"] = str(history) if isinstance(history, Path) else history
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 2
    app.config.update(config)
    return app, APScheduler(app=app)


@asynccontextmanager
async def served(app: Quart, ext: APScheduler) -> AsyncIterator[APScheduler]:
    """The app serving with its scheduler started; stopping it stops the scheduler."""
    async with app.test_app():
        ext.start()
        await history_open(ext)
        yield ext


def history_of(ext: APScheduler) -> RunHistory:
    history = ext.history
    assert history is not None
    return history


async def history_open(ext: APScheduler, timeout: float = 5.0) -> None:
    """Wait until the history file is open: the writer task opens it off the loop, and
    queries before that answer "not open" (see the xfail test about it below)."""
    if ext.history is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            await ext.get_running_runs()
            return
        except HistoryUnavailableError as exc:
            if "not open" not in str(exc) or time.monotonic() > deadline:
                return  # the tests about unusable files look at the error themselves
        await asyncio.sleep(0.01)


async def eventually(
    fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], object], timeout: float = 5.0
) -> T:
    """Await ``fetch()`` every 20 ms until ``predicate`` holds for its result; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(0.02)


async def all_runs(
    ext: APScheduler, job_id: str | None = None, **filters: Any
) -> list[dict[str, Any]]:
    """Every recorded run (of ``job_id``), newest first, through the Python API."""
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await ext.get_runs(job_id, limit=500, cursor=cursor, **filters)
        runs += page.runs
        if page.next_cursor is None:
            return runs
        cursor = page.next_cursor


def file_rows(path: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """The rows of the ``runs`` table, oldest first, read with sqlite3 directly."""
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute(f"SELECT * FROM runs WHERE {where} ORDER BY id", params)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # not migrated yet
            raise
        return [dict(row) for row in rows]


def sql(path: Path, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        result = conn.execute(statement, params).fetchall()
        conn.commit()
        return result


# Small file operations, kept out of the async tests (ruff's ASYNC240).
def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def read(path: Path) -> bytes:
    return path.read_bytes()


def files_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def parse(stamp: str) -> datetime:
    """An ISO 8601 time the history gave; it must carry an offset."""
    value = datetime.fromisoformat(stamp)
    assert value.utcoffset() is not None, stamp
    return value


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Recorder:
    """Collects what a blinker signal sends for one app."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    def __len__(self) -> int:
        return len(self.calls)


# ------------------------------------------------------------------------ job functions

GATES: dict[str, asyncio.Event] = {}
THREAD_GATES: dict[str, threading.Event] = {}
SEEN: dict[str, Any] = {}


async def sleep_async(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "slept"


def sleep_plain(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


async def fail_async(message: str) -> None:
    raise ValueError(message)


def fail_plain(message: str) -> None:
    raise ValueError(message)


async def wait_gate(name: str) -> str:
    await GATES[name].wait()
    return name


def wait_thread_gate(name: str) -> str:
    THREAD_GATES[name].wait(30)
    return name


async def noop() -> None:
    pass


def noop_plain() -> None:
    pass


# -------------------------------------------------------------------- 1. every outcome


@pytest.mark.parametrize("func", [sleep_async, sleep_plain], ids=["coroutine", "plain"])
async def test_success_is_recorded_with_times_duration_and_scheduled_time(
    db: Path, func: Callable[..., Any]
) -> None:
    app, ext = make_app(db)
    async with served(app, ext):
        fire = datetime.now(timezone.utc) + timedelta(seconds=0.2)
        ext.add_job("nap", func, args=[0.05], trigger="date", run_date=fire)
        (run,) = await eventually(
            lambda: all_runs(ext, "nap"), lambda r: r and r[0]["outcome"] != "running"
        )

    assert run["outcome"] == "success"
    assert run["job_id"] == "nap"
    assert parse(run["scheduled_run_time"]) == fire
    started, finished = parse(run["started_at"]), parse(run["finished_at"])
    assert fire <= started < finished
    assert run["duration"] >= 0.045
    assert abs((finished - started).total_seconds() - run["duration"]) < 1e-5
    assert run["error"] is run["error_type"] is run["error_message"] is run["traceback"] is None
    assert (run["host"], run["pid"]) == (ext.host_name, os.getpid())
    # The file says the same after the stop.
    (row,) = file_rows(db)
    assert (row["run_id"], row["outcome"]) == (run["run_id"], "success")


@pytest.mark.parametrize("func", [fail_async, fail_plain], ids=["coroutine", "plain"])
async def test_error_is_recorded_with_type_message_and_traceback(
    location: str, func: Callable[..., Any]
) -> None:
    app, ext = make_app(location)
    async with served(app, ext):
        ext.add_job("broken", func, args=["boom 42"], trigger="date")
        (run,) = await eventually(lambda: all_runs(ext, "broken", outcome="error"), len)

    assert run["error_type"] == "ValueError"
    assert run["error_message"] == "boom 42"
    assert run["error"] == "ValueError: boom 42"
    assert func.__name__ in run["traceback"]
    assert run["duration"] is not None and run["finished_at"] is not None


async def test_missed_run_is_recorded_without_a_start(location: str) -> None:
    app, ext = make_app(location)
    late = datetime.now(timezone.utc) - timedelta(seconds=30)
    async with served(app, ext):
        ext.add_job("late", noop, trigger="date", run_date=late, misfire_grace_time=1)
        (run,) = await eventually(lambda: all_runs(ext, "late"), len)

    assert run["outcome"] == "missed"
    assert parse(run["scheduled_run_time"]) == late
    assert run["started_at"] is None and run["duration"] is None
    assert parse(run["finished_at"]) > late
    assert run["error"] is None


async def test_skipped_runs_are_recorded_when_max_instances_are_running(db: Path) -> None:
    app, ext = make_app(db)
    async with served(app, ext):
        ext.add_job(
            "slow", sleep_async, args=[0.3], trigger="interval", seconds=0.05, max_instances=1
        )
        skipped = await eventually(lambda: all_runs(ext, "slow", outcome="skipped"), len)
        ext.remove_job("slow")

    assert all(run["started_at"] is None for run in skipped)
    assert all(run["scheduled_run_time"] is not None for run in skipped)
    outcomes = Counter(row["outcome"] for row in file_rows(db))
    assert outcomes["skipped"] >= 1 and outcomes["running"] == 0, outcomes


@pytest.mark.parametrize("kind", ["coroutine", "plain"])
async def test_run_still_going_at_shutdown_is_recorded_interrupted(db: Path, kind: str) -> None:
    app, ext = make_app(db, SCHEDULER_SHUTDOWN_TIMEOUT=0.2)
    THREAD_GATES["stuck"] = gate = threading.Event()
    try:
        async with served(app, ext):
            if kind == "coroutine":
                ext.add_job("stuck", sleep_async, args=[60], trigger="date")
            else:
                ext.add_job("stuck", wait_thread_gate, args=["stuck"], trigger="date")
            await eventually(ext.get_running_runs, len)
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 3  # the timeout, not the job, ended the stop
    finally:
        gate.set()  # a thread cannot be cancelled: let it end

    (row,) = file_rows(db)
    assert row["outcome"] == "interrupted"
    assert row["finished_at"] is not None and row["started_at"] is not None
    # Reading it back through a new app on the same file.
    app2, ext2 = make_app(db)
    async with served(app2, ext2):
        (run,) = await all_runs(ext2, "stuck")
    assert run["outcome"] == "interrupted"
    assert run["error_type"] is None  # interrupted by the shutdown, not an error of its own


@pytest.mark.parametrize("kind", ["coroutine", "plain"])
async def test_run_job_is_recorded(location: str, kind: str) -> None:
    app, ext = make_app(location)
    ok, bad = (sleep_async, fail_async) if kind == "coroutine" else (sleep_plain, fail_plain)
    async with served(app, ext):
        ext.add_job("manual", ok, args=[0.01], trigger="interval", hours=1)
        ext.add_job("manual_bad", bad, args=["nope"], trigger="interval", hours=1)
        before = datetime.now(timezone.utc)
        assert await ext.run_job("manual") == "slept"
        with pytest.raises(ValueError, match="nope"):
            await ext.run_job("manual_bad")
        after = datetime.now(timezone.utc)
        (run,) = await all_runs(ext, "manual")
        (failed,) = await all_runs(ext, "manual_bad")

    assert run["outcome"] == "success" and run["duration"] >= 0.005
    assert before <= parse(run["scheduled_run_time"]) <= parse(run["started_at"]) <= after
    assert failed["outcome"] == "error" and failed["error"] == "ValueError: nope"


async def test_each_run_records_the_epoch_it_started_under(location: str) -> None:
    # The coordination sets `epoch` while this process leads, None otherwise: here the
    # test sets it (test_coordination checks what a leader records).
    app, ext = make_app(location, SCHEDULER_COORDINATION=False)
    GATES["epoch"] = gate = asyncio.Event()
    late = datetime.now(timezone.utc) - timedelta(seconds=30)
    async with served(app, ext):
        history = history_of(ext)
        ext.add_job("plain", noop, trigger="interval", hours=1)
        ext.add_job("held", wait_gate, args=["epoch"], trigger="interval", hours=1)
        await ext.run_job("plain")
        history.epoch = 7
        await ext.run_job("plain")
        held = ext.run_job("held")
        await eventually(ext.get_running_runs, len)
        history.epoch = 8  # a new leader's epoch while "held" runs
        gate.set()
        await held
        ext.add_job("late", noop, trigger="date", run_date=late, misfire_grace_time=1)
        await eventually(lambda: all_runs(ext, "late"), len)
        runs = await all_runs(ext)

    by_job: dict[str, list[Any]] = {}
    for run in reversed(runs):  # oldest first
        by_job.setdefault(run["job_id"], []).append((run["outcome"], run["epoch"]))
    assert by_job == {
        "plain": [("success", None), ("success", 7)],
        "held": [("success", 7)],  # the epoch it started under
        "late": [("missed", 8)],
    }


# ------------------------------------------------------- 2. recorded before the code runs


async def query_own_run() -> None:
    SEEN["running"] = await current_app.extensions["apscheduler"].get_running_runs()


def poll_file_for_own_run(path: str) -> None:
    """In the job's thread: wait (bounded) until the file shows this run as running."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = file_rows(Path(path), "outcome = 'running' AND job_id = 'plain_self'")
        if rows:
            SEEN["file"] = rows
            return
        time.sleep(0.02)


async def test_run_is_recorded_as_running_before_the_job_code_runs(db: Path) -> None:
    SEEN.clear()
    app, ext = make_app(db)
    async with served(app, ext):
        ext.add_job("self_query", query_own_run, trigger="date")
        ext.add_job("plain_self", poll_file_for_own_run, args=[str(db)], trigger="date")
        await eventually(
            lambda: all_runs(ext, outcome="success"), lambda runs: len(runs) == 2, timeout=8
        )
        runs = {run["job_id"]: run for run in await all_runs(ext)}

    (seen,) = [run for run in SEEN["running"] if run["job_id"] == "self_query"]
    assert seen["outcome"] == "running"
    assert seen["run_id"] == runs["self_query"]["run_id"]
    assert seen["started_at"] == runs["self_query"]["started_at"]
    assert seen["finished_at"] is None and seen["duration"] is None
    # A plain job sees its row in the file itself while it runs.
    (row,) = SEEN["file"]
    assert row["run_id"] == runs["plain_self"]["run_id"]


# ------------------------------------------------------------ 3. killed worker, two apps


def _integrity(path: Path) -> str:
    (result,) = sql(path, "PRAGMA integrity_check")[0]
    return str(result)


async def test_worker_killed_mid_run_is_marked_interrupted_by_the_next_process(db: Path) -> None:
    env = {"HISTORY": str(db), "PORT": str(free_port()), "BUSY": "1"}
    with python("history_app.py", cwd=APPS, **env) as proc:
        deadline = time.monotonic() + 15
        while True:
            rows = file_rows(db)
            final = {row["job_id"] for row in rows if row["outcome"] in FINAL}
            running = [row for row in rows if row["job_id"] == "long_job"]
            if (
                {"quick_1", "quick_2", "quick_3", "failing", "busy"} <= final
                and running
                and running[0]["outcome"] == "running"
            ):
                break
            assert time.monotonic() < deadline, f"runs not recorded\n{proc.dump()}"
            assert proc.popen.poll() is None, proc.dump()
            await asyncio.sleep(0.05)
        before_kill = {row["id"]: row for row in rows if row["outcome"] in FINAL}
        proc.send(signal.SIGKILL)  # mid-run, and likely mid-write (busy writes all the time)
        assert proc.wait_exit() == -signal.SIGKILL

    # The crash left a consistent file, with every committed run in it.
    assert _integrity(db) == "ok"
    after_kill = {row["id"]: row for row in file_rows(db)}
    assert all(after_kill.get(id_) == row for id_, row in before_kill.items())
    (stuck,) = [row for row in after_kill.values() if row["job_id"] == "long_job"]
    assert stuck["outcome"] == "running" and stuck["pid"] == proc.pid

    app, ext = make_app(db)
    async with served(app, ext):
        assert await ext.get_running_runs() == []
        (run,) = await all_runs(ext, "long_job")

    assert run["outcome"] == "interrupted"
    assert run["error_type"] == "ProcessDied"
    assert run["run_id"] == stuck["run_id"]
    assert _integrity(db) == "ok"
    final_rows = {row["id"]: row for row in file_rows(db)}
    assert final_rows.keys() == after_kill.keys()  # nothing lost, nothing added
    for id_, row in after_kill.items():
        if id_ != stuck["id"]:
            assert final_rows[id_] == row  # other rows intact
    assert final_rows[stuck["id"]]["outcome"] == "interrupted"


async def test_second_history_in_the_same_process_leaves_live_runs_alone(db: Path) -> None:
    GATES["shared"] = gate = asyncio.Event()
    app_a, ext_a = make_app(db)
    app_b, ext_b = make_app(db)
    async with served(app_a, ext_a):
        ext_a.add_job("shared_job", wait_gate, args=["shared"], trigger="date")
        await wait_until(lambda: file_rows(db, "outcome = 'running'"))
        async with served(app_b, ext_b):
            (seen,) = await ext_b.get_running_runs()
            assert seen["job_id"] == "shared_job" and seen["outcome"] == "running"
            gate.set()
            (done,) = await eventually(
                lambda: all_runs(ext_b, "shared_job"), lambda r: r[0]["outcome"] != "running"
            )
        assert done["outcome"] == "success"
        assert done["run_id"] == seen["run_id"]

    (row,) = file_rows(db)
    assert row["outcome"] == "success"


async def test_processes_forked_after_import_record_distinct_runs_into_one_file(
    db: Path,
) -> None:
    # Run ids came from a token and a counter made at import: a child forked after that
    # handed out its parent's ids, and INSERT OR REPLACE overwrote the other's rows.
    runs = 40
    with python("forked_history.py", cwd=APPS, HISTORY=str(db), RUNS=str(runs)) as proc:
        assert proc.wait_exit(timeout=60) == 0, proc.dump()
        pids = {int(line.split()[1]) for line in proc.stdout if line.startswith("recorded ")}
    assert len(pids) == 2 and proc.pid in pids, proc.dump()

    rows = file_rows(db)
    assert len({row["run_id"] for row in rows}) == len(rows) == 2 * runs
    assert Counter(row["pid"] for row in rows) == {pid: runs for pid in pids}
    assert len({row["process"] for row in rows}) == 2
    assert {row["outcome"] for row in rows} == {"success"}


async def test_histories_opening_a_new_file_together_all_get_its_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Workers started together used to all see schema version 0 and all create the
    # table: every one but the first failed with "table runs already exists". (A busy
    # machine may still make one wait for the lock, and retry: that is fine.)
    for attempt in range(5):
        db = tmp_path / f"together-{attempt}.sqlite"
        histories = [RunHistory(str(db), host="here", retry_interval=0.1) for _ in range(4)]
        for history in histories:
            history.start()
        try:
            for history in histories:
                await eventually(_readable(history), bool, timeout=15)
        finally:
            for history in histories:
                await history.aclose()
        assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert "already exists" not in caplog.text


def _readable(history: RunHistory) -> Callable[[], Awaitable[bool]]:
    async def readable() -> bool:
        try:
            return await history.running() == []
        except HistoryUnavailableError:
            return False

    return readable


async def test_a_run_id_already_in_the_file_is_never_overwritten(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Unique run ids make a clash impossible short of a copied file or a bug; should one
    # happen, the row there stays, and the clash is logged rather than silent.
    app, ext = make_app(db)
    async with served(app, ext):
        ext.add_job("first", noop, trigger="interval", hours=1)
        ext.add_job("second", noop, trigger="interval", hours=1)
        process = _history._Process()
        monkeypatch.setattr(_history, "_process", process)
        for _ in range(3):
            await ext.run_job("first")
        before = await eventually(lambda: all_runs(ext, "first"), lambda runs: len(runs) == 3)
        process.numbers = itertools.count(2)  # hands out the second and third ids again
        with caplog.at_level(logging.ERROR, logger="quart_sched"):
            for _ in range(3):
                await ext.run_job("second")
            await eventually(lambda: all_runs(ext), lambda runs: len(runs) == 4)
        assert await all_runs(ext, "first") == before  # untouched
        (new,) = await all_runs(ext, "second")
        assert new["run_id"] == f"{process.prefix}-4"
    assert "already holds the run ids of 2 run(s)" in caplog.text
    assert len(file_rows(db)) == 4


def _delete(path: Path, how: str) -> None:
    if how == "replaced":
        other = path.with_name("other.sqlite")
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE unrelated (x)")
        os.replace(other, path)
        return
    suffixes = ["", "-wal", "-shm"] if how == "deleted-with-wal" else [""]
    for suffix in suffixes:
        Path(f"{path}{suffix}").unlink()


@pytest.mark.parametrize("how", ["deleted", "deleted-with-wal", "replaced"])
async def test_a_file_deleted_or_replaced_while_serving_is_recreated_with_the_runs_under_way(
    db: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Runs used to go on into the unlinked file, lost at restart with the `running` rows
    # that mark killed runs interrupted.
    GATES["recreated"] = gate = asyncio.Event()
    app, ext = make_app(db)
    async with served(app, ext):
        ext.add_job("long", wait_gate, args=["recreated"], trigger="interval", hours=1)
        ext.add_job("quick", noop, trigger="interval", hours=1)
        long_run = ext.run_job("long")
        await ext.run_job("quick")
        await wait_until(lambda: len(file_rows(db)) == 2)
        (running,) = file_rows(db, "outcome = 'running'")

        with caplog.at_level(logging.WARNING, logger="quart_sched"):
            await asyncio.to_thread(_delete, db, how)
            for _ in range(3):
                await ext.run_job("quick")
            # Read through the history first: it writes what it holds, and so sees the
            # file is another. (A reader opening the path before that would replay the old
            # file's WAL, still there, into the new one: SQLite's own hazard.)
            assert len(await all_runs(ext, "quick")) == 3
            assert len(file_rows(db, "job_id = 'quick'")) == 3
            # The run under way was recorded again, as it was; the earlier quick run went
            # with the old file.
            assert file_rows(db, "job_id = 'long'") == [{**running, "id": 1}]
            assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
            gate.set()
            await long_run
            await wait_until(lambda: file_rows(db, "job_id = 'long'")[0]["outcome"] == "success")
            await ext.run_job("quick")
            assert [run["job_id"] for run in await all_runs(ext)] == ["quick"] * 4 + ["long"]
    warnings = [r for r in caplog.records if "deleted or replaced" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert _integrity(db) == "ok"
    rows = file_rows(db)
    assert Counter(row["outcome"] for row in rows) == {"success": 5}
    if how == "replaced":
        assert sql(db, "SELECT name FROM sqlite_master WHERE name = 'unrelated'")


async def test_a_file_deleted_while_only_a_long_run_goes_on_gets_its_running_row_back(
    db: Path,
) -> None:
    # Nothing else is written meanwhile: the writer looks at the file now and then while
    # runs are under way, so a crash after the deletion still finds the run to mark.
    GATES["alone"] = gate = asyncio.Event()
    app, ext = make_app(db)
    history_of(ext).retry_interval = 0.2
    async with served(app, ext):
        ext.add_job("alone", wait_gate, args=["alone"], trigger="interval", hours=1)
        run = ext.run_job("alone")
        await wait_until(lambda: file_rows(db, "outcome = 'running'"))
        (before,) = file_rows(db)
        await asyncio.to_thread(_delete, db, "deleted")
        await wait_until(lambda: file_rows(db) == [before])
        gate.set()
        await run


# -------------------------------------------------------------------------- 4. retention


async def test_keep_runs_keeps_the_newest_runs_of_each_job(db: Path) -> None:
    app, ext = make_app(db, SCHEDULER_HISTORY_KEEP_RUNS=3)
    finished = Recorder()
    with run_finished.connected_to(finished, sender=app):
        async with served(app, ext):
            for job_id in ("a", "b", "c"):
                ext.add_job(job_id, noop, trigger="interval", hours=1)
            for _ in range(6):
                for job_id in ("a", "b", "c"):
                    await ext.run_job(job_id)
            assert len(await all_runs(ext)) == 18  # a query writes what is buffered first
            assert await history_of(ext).enforce_retention() == 9
            kept = {job_id: await all_runs(ext, job_id) for job_id in ("a", "b", "c")}

    for job_id, runs in kept.items():
        newest = [c["run"]["run_id"] for c in finished.calls if c["job_id"] == job_id][-3:]
        assert [run["run_id"] for run in runs] == newest[::-1], job_id
    assert len(file_rows(db)) == 9


async def test_enforce_retention_applies_to_runs_not_written_yet(location: str) -> None:
    app, ext = make_app(location, SCHEDULER_HISTORY_KEEP_RUNS=3)
    async with served(app, ext):
        ext.add_job("a", noop, trigger="interval", hours=1)
        for _ in range(6):
            await ext.run_job("a")
        await history_of(ext).enforce_retention()
        assert len(await all_runs(ext, "a")) == 3


async def test_retention_runs_periodically_while_serving(db: Path) -> None:
    app, ext = make_app(db, SCHEDULER_HISTORY_KEEP_RUNS=2)
    history_of(ext).retention_interval = 0.1
    async with served(app, ext):
        ext.add_job("often", noop, trigger="interval", hours=1)
        for _ in range(5):
            await ext.run_job("often")
        await wait_until(lambda: len(file_rows(db)) == 2)


async def test_keep_days_drops_old_runs_and_keeps_recent_and_running_ones(db: Path) -> None:
    app, ext = make_app(db, SCHEDULER_HISTORY_KEEP_DAYS=30)
    GATES["old_running"] = gate = asyncio.Event()
    async with served(app, ext):
        ext.add_job("old", noop, trigger="interval", hours=1)
        ext.add_job("old_running", wait_gate, args=["old_running"], trigger="date")
        for _ in range(3):
            await ext.run_job("old")
        await eventually(ext.get_running_runs, len)  # written to the file
        sql(db, "UPDATE runs SET at = at - 40 * 86400")
        await ext.run_job("old")  # a recent one
        deleted = await history_of(ext).enforce_retention()
        left = await all_runs(ext)
        gate.set()
        await eventually(ext.get_running_runs, lambda r: not r)

    assert deleted == 3
    assert Counter((run["job_id"], run["outcome"]) for run in left) == {
        ("old", "success"): 1,
        ("old_running", "running"): 1,
    }
    # The stop enforces retention once more: old_running, now finished, started "40 days
    # ago" too.
    assert [(row["job_id"], row["outcome"]) for row in file_rows(db)] == [("old", "success")]


async def test_keep_runs_never_deletes_a_running_run(location: str) -> None:
    app, ext = make_app(location, SCHEDULER_HISTORY_KEEP_RUNS=3)
    GATES["first"] = gate = asyncio.Event()
    async with served(app, ext):
        ext.add_job("multi", switch, trigger="interval", hours=1, max_instances=10)
        SEEN["switch"] = 0
        first = ext.run_job("multi")  # blocks on the gate
        await eventually(ext.get_running_runs, len)
        for _ in range(4):
            await ext.run_job("multi")
        assert len(await all_runs(ext, "multi")) == 5  # written, the running one the oldest
        await history_of(ext).enforce_retention()
        running = await ext.get_running_runs()
        gate.set()
        await first
        runs = await all_runs(ext, "multi")

    assert len(running) == 1, "the running run was deleted by retention"
    outcomes = {run["run_id"]: run["outcome"] for run in runs}
    assert outcomes.get(running[0]["run_id"]) == "success"


async def switch() -> None:
    SEEN["switch"] += 1
    if SEEN["switch"] == 1:
        await GATES["first"].wait()


# -------------------------------------------------------------- 5. pages, filters, API


async def flaky() -> None:
    SEEN["flaky"] += 1
    if SEEN["flaky"] % 5 == 0:
        raise RuntimeError(f"run {SEEN['flaky']} fails")


async def test_pages_cursors_and_filters_over_http_and_python(location: str) -> None:
    SEEN["flaky"] = 0
    app, ext = make_app(location, SCHEDULER_API_ENABLED=True)
    finished = Recorder()
    with run_finished.connected_to(finished, sender=app):
        async with served(app, ext):
            ext.add_job("flaky", flaky, trigger="interval", hours=1)
            ext.add_job("other", noop, trigger="interval", hours=1)
            client = app.test_client()
            response = await client.get("/scheduler/jobs/flaky")
            assert (await response.get_json())["last_run"] is None
            middle = None
            for n in range(1, 26):
                with suppress(RuntimeError):  # every fifth run fails
                    await ext.run_job("flaky")
                if n == 10:
                    middle = datetime.now(timezone.utc)
            await ext.run_job("other")
            assert middle is not None
            order = [c["run"]["run_id"] for c in finished.calls if c["job_id"] == "flaky"]
            newest_first = order[::-1]

            # Pages of 10, newest first, each run once, by HTTP and by Python alike.
            seen: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                query = {"limit": "10"} | ({"cursor": cursor} if cursor else {})
                response = await client.get("/scheduler/jobs/flaky/runs", query_string=query)
                assert response.status_code == 200
                body = await response.get_json()
                page = await ext.get_runs("flaky", limit=10, cursor=cursor)
                assert [r["run_id"] for r in body] == [r["run_id"] for r in page.runs]
                cursor = response.headers.get("X-Next-Cursor")
                assert cursor == page.next_cursor
                if cursor is not None:
                    link = response.headers["Link"]
                    assert f"cursor={cursor}" in link and 'rel="next"' in link
                    assert "limit=10" in link
                else:
                    assert "Link" not in response.headers
                seen += [r["run_id"] for r in body]
                pages += 1
                if cursor is None:
                    break
            assert pages == 3
            assert seen == newest_first
            starts = [parse(run["started_at"]) for run in await all_runs(ext, "flaky")]
            assert all(a > b for a, b in itertools.pairwise(starts))

            async def runs_for(**query: str) -> list[dict[str, Any]]:
                response = await client.get("/scheduler/jobs/flaky/runs", query_string=query)
                assert response.status_code == 200, await response.get_data()
                body: list[dict[str, Any]] = await response.get_json()
                return body

            errors = await runs_for(outcome="error")
            assert [r["run_id"] for r in errors] == [newest_first[i] for i in (0, 5, 10, 15, 20)]
            assert len(await runs_for(outcome="success,error")) == 25
            assert len(await runs_for(outcome="success")) == 20
            assert len(await runs_for(outcome="success", limit="500")) == 20
            assert await runs_for(outcome="missed") == []
            assert [r["run_id"] for r in await runs_for(since=middle.isoformat())] == (
                newest_first[:15]
            )
            assert [r["run_id"] for r in await runs_for(until=middle.isoformat())] == (
                newest_first[15:]
            )
            python_errors = await ext.get_runs("flaky", outcome=["error"], since=middle)
            assert [r["run_id"] for r in python_errors.runs] == [
                newest_first[i] for i in (0, 5, 10)
            ]

            # /runs across jobs, /runs/running, last_run.
            response = await client.get("/scheduler/runs", query_string={"limit": "500"})
            everything = await response.get_json()
            assert Counter(r["job_id"] for r in everything) == {"flaky": 25, "other": 1}
            assert everything[0]["job_id"] == "other"
            response = await client.get("/scheduler/runs/running")
            assert response.status_code == 200 and await response.get_json() == []
            response = await client.get("/scheduler/jobs/flaky")
            last = (await response.get_json())["last_run"]
            assert last["run_id"] == newest_first[0] and last["outcome"] == "error"
            assert last["error"] == "RuntimeError: run 25 fails"
            response = await client.get("/scheduler/jobs")
            by_id = {job["id"]: job for job in await response.get_json()}
            assert by_id["other"]["last_run"]["outcome"] == "success"

            # A removed job's history stays readable.
            ext.remove_job("flaky")
            assert (await client.get("/scheduler/jobs/flaky")).status_code == 404
            response = await client.get("/scheduler/jobs/flaky/runs", query_string={"limit": 5})
            assert response.status_code == 200
            assert [r["run_id"] for r in await response.get_json()] == newest_first[:5]


@pytest.mark.parametrize(
    "job_id", ["what?now", "hash#tag", "two words", "ünïcode", "per%2Fcent", "plus+sign"]
)
async def test_link_to_the_next_page_works_for_ids_that_need_encoding(
    location: str, job_id: str
) -> None:
    # The link was built from the decoded path: "?" cut it, "%2F" decoded to "/", and
    # non-ASCII text went into a header as is.
    app, ext = make_app(location, SCHEDULER_API_ENABLED=True)
    async with served(app, ext):
        ext.add_job(job_id, noop, trigger="interval", hours=1)
        ext.add_job("other", noop, trigger="interval", hours=1)
        for _ in range(3):
            await ext.run_job(job_id)
            await ext.run_job("other")
        newest_first = [run["run_id"] for run in await all_runs(ext, job_id)]
        client = app.test_client()
        response = await client.get(
            f"/scheduler/jobs/{quote(job_id, safe='')}/runs", query_string={"limit": "2"}
        )
        assert response.status_code == 200
        assert [run["run_id"] for run in await response.get_json()] == newest_first[:2]
        link = response.headers["Link"]
        assert link.startswith("<") and link.endswith('>; rel="next"'), link
        target = link[1 : link.index(">")]
        assert target.isascii() and " " not in target and "#" not in target, link
        second = await client.get(target)
        assert second.status_code == 200, (target, await second.get_data(as_text=True))
        runs = await second.get_json()
        assert [run["run_id"] for run in runs] == newest_first[2:]
        assert {run["job_id"] for run in runs} == {job_id}
        assert "Link" not in second.headers


async def test_running_runs_route_lists_the_run_under_way(location: str) -> None:
    app, ext = make_app(location, SCHEDULER_API_ENABLED=True)
    GATES["api_running"] = gate = asyncio.Event()
    async with served(app, ext):
        ext.add_job("api_running", wait_gate, args=["api_running"], trigger="interval", hours=1)
        future = ext.run_job("api_running")
        client = app.test_client()
        await eventually(ext.get_running_runs, len)
        response = await client.get("/scheduler/runs/running")
        (run,) = await response.get_json()
        assert (run["job_id"], run["outcome"]) == ("api_running", "running")
        response = await client.get("/scheduler/jobs/api_running")
        assert (await response.get_json())["last_run"]["outcome"] == "running"
        gate.set()
        await future
        response = await client.get("/scheduler/runs/running")
        assert await response.get_json() == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"cursor": "xyz"}, "cursor"),
        ({"cursor": "-5"}, "cursor"),
        ({"outcome": "bogus"}, "outcome"),
        ({"outcome": "success,nope"}, "outcome"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-45"}, "until"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(
    db: Path, query: dict[str, str], name: str
) -> None:
    app, ext = make_app(db, SCHEDULER_API_ENABLED=True)
    async with served(app, ext):
        client = app.test_client()
        for path in ("/scheduler/runs", "/scheduler/jobs/any/runs"):
            response = await client.get(path, query_string=query)
            assert response.status_code == 400, (path, query)
            assert name in (await response.get_json())["error_message"]


async def test_history_routes_require_auth(db: Path) -> None:
    app, ext = make_app(
        db, SCHEDULER_API_ENABLED=True, SCHEDULER_AUTH=HTTPBasicAuth(users={"admin": "s3cret"})
    )
    async with served(app, ext):
        ext.add_job("guarded", noop, trigger="interval", hours=1)
        await ext.run_job("guarded")
        client = app.test_client()
        for path in ("/scheduler/jobs/guarded/runs", "/scheduler/runs", "/scheduler/runs/running"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert "run_id" not in (await response.get_data(as_text=True))
            wrong = await client.get(path, headers=basic("admin", "wrong"))
            assert wrong.status_code == 401, path
            right = await client.get(path, headers=basic("admin", "s3cret"))
            assert right.status_code == 200, path


async def test_history_is_readable_as_soon_as_the_app_serves(db: Path) -> None:
    app, _ext = make_app(db, SCHEDULER_API_ENABLED=True)
    async with app.test_app():
        response = await app.test_client().get("/scheduler/runs")
        assert response.status_code == 200, await response.get_data(as_text=True)


# ---------------------------------------------------------- 7. unusable history files


async def test_corrupted_file_costs_the_history_not_the_jobs(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(db, GARBAGE)
    app, ext = make_app(db, SCHEDULER_API_ENABLED=True)
    executed = Recorder()
    with (
        caplog.at_level(logging.ERROR, "quart_sched"),
        job_executed.connected_to(executed, sender=app),
    ):
        async with served(app, ext):
            ext.add_job("tick", noop, trigger="interval", seconds=0.05)
            await wait_until(lambda: len(executed) >= 3)
            client = app.test_client()
            response = await client.get("/scheduler/runs")
            assert response.status_code == 503
            message = (await response.get_json())["error_message"]
            assert str(db) in message and "cannot be used" in message
            response = await client.get("/scheduler/jobs/tick/runs")
            assert response.status_code == 503
            response = await client.get("/scheduler/jobs/tick")
            assert response.status_code == 200
            assert (await response.get_json())["last_run"] is None
            with pytest.raises(HistoryUnavailableError, match="cannot be used"):
                await ext.get_runs()

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(db) in r.getMessage() and "cannot be used" in r.getMessage() for r in errors)
    assert read(db) == GARBAGE  # left as it was


async def test_locked_file_keeps_runs_in_memory_until_it_can_be_written(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, ext = make_app(db)
    history_of(ext).retry_interval = 0.2
    executed = Recorder()
    with job_executed.connected_to(executed, sender=app):
        async with served(app, ext):
            ext.add_job("tick", noop, trigger="interval", seconds=0.05)
            await wait_until(lambda: len(file_rows(db)) >= 2)
            with closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as locker:
                locker.execute("BEGIN EXCLUSIVE")
                await wait_until(lambda: history_of(ext).error is not None, timeout=5)
                assert "locked" in str(history_of(ext).error)
                during = len(executed)
                await wait_until(lambda: len(executed) >= during + 5)  # jobs go on
                locker.execute("ROLLBACK")
            # Written at the next retry, with what ran meanwhile.
            await wait_until(lambda: len(file_rows(db)) >= during + 5)
            ext.remove_job("tick")
        # After the stop: every executed run has its row, with its outcome.

    rows = file_rows(db)
    assert Counter(row["outcome"] for row in rows) == {"success": len(executed)}
    assert len({row["run_id"] for row in rows}) == len(rows)


async def test_closing_waits_briefly_for_a_file_another_process_holds(db: Path) -> None:
    """Workers sharing one history file lock it in turn: a worker stopping while another
    writes must still write its runs, not drop them."""
    app, ext = make_app(db)
    async with served(app, ext):
        ext.add_job("tick", noop, trigger="interval", hours=1)
        await wait_until(lambda: file_rows(db) is not None)
        for _ in range(5):
            await ext.run_job("tick")
        with closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")  # as another worker's write would
            loop = asyncio.get_running_loop()
            loop.call_later(1.5, locker.execute, "ROLLBACK")
            await history_of(ext).release("serving")  # the close: waits out the lock
            await history_of(ext).release("scheduler")
    rows = file_rows(db)
    assert [row["outcome"] for row in rows].count("success") == 5, rows


async def test_error_clears_once_a_locked_file_is_written_again(db: Path) -> None:
    app, ext = make_app(db)
    history_of(ext).retry_interval = 0.2
    async with served(app, ext):
        ext.add_job("tick", noop, trigger="interval", seconds=0.05)
        await wait_until(lambda: file_rows(db))
        with closing(sqlite3.connect(db, timeout=5, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            await wait_until(lambda: history_of(ext).error is not None)
            locker.execute("ROLLBACK")
        written = len(file_rows(db))
        await wait_until(lambda: len(file_rows(db)) > written + 2)  # writable again
        assert history_of(ext).error is None


async def test_file_of_a_newer_schema_is_refused_with_the_version(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sql(db, f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
    app, ext = make_app(db, SCHEDULER_API_ENABLED=True)
    executed = Recorder()
    with (
        caplog.at_level(logging.ERROR, "quart_sched"),
        job_executed.connected_to(executed, sender=app),
    ):
        async with served(app, ext):
            ext.add_job("tick", noop, trigger="interval", seconds=0.05)
            await wait_until(lambda: history_of(ext).error is not None)
            await wait_until(lambda: len(executed) >= 2)
            with pytest.raises(HistoryUnavailableError, match=f"version {SCHEMA_VERSION + 98}"):
                await ext.get_runs()
            response = await app.test_client().get("/scheduler/runs")
            assert response.status_code == 503
            message = (await response.get_json())["error_message"]
            assert f"schema version {SCHEMA_VERSION + 98}" in message
            assert "upgrade quart_sched" in message

    assert f"schema version {SCHEMA_VERSION + 98}" in caplog.text
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION + 98,)]  # left as it was


async def test_fresh_file_gets_the_current_schema_version(db: Path) -> None:
    app, ext = make_app(db)
    async with served(app, ext):
        pass
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert sql(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'")
    # Opening it again keeps the version and the rows.
    sql(
        db,
        "INSERT INTO runs (run_id, job_id, outcome, at, host, pid, process) "
        "VALUES ('r1', 'j', 'success', ?, 'h', 1, 'p')",
        (time.time(),),
    )
    app2, ext2 = make_app(db)
    async with served(app2, ext2):
        (run,) = await all_runs(ext2)
    assert run["run_id"] == "r1"
    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_file_of_schema_1_migrates_and_keeps_its_rows(db: Path) -> None:
    # A file written before runs carried the leader's epoch: schema 1, no `epoch` column.
    now = time.time() - 60
    with closing(sqlite3.connect(db)) as conn:
        for statement in _history.MIGRATIONS[1]:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO runs (run_id, job_id, outcome, started_at, finished_at, at, duration, "
            "host, pid, process) VALUES (?, 'old', ?, ?, ?, ?, 0.5, 'h', 1, 'p')",
            [
                (f"old-{n}", outcome, now + n, now + n + 0.5, now + n)
                for n, outcome in enumerate(["success", "error", "running"])
            ],
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    before = file_rows(db)

    app, ext = make_app(db, SCHEDULER_COORDINATION=False)  # the test sets the epoch
    history_of(ext).epoch = 12
    async with served(app, ext):
        ext.add_job("new", noop, trigger="interval", hours=1)
        await ext.run_job("new")
        old = await all_runs(ext, "old")
        (new,) = await all_runs(ext, "new")

    assert sql(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert [run["run_id"] for run in old] == ["old-2", "old-1", "old-0"]
    # pid 1 is alive (init): its running row stays running, as it was.
    assert [run["outcome"] for run in old] == ["running", "error", "success"]
    assert {run["epoch"] for run in old} == {None}
    assert list(old[0])[-2:] == ["pid", "epoch"]  # the key follows "pid"
    assert (new["outcome"], new["epoch"]) == ("success", 12)
    after = {row["run_id"]: row for row in file_rows(db)}
    for row in before:
        assert after[row["run_id"]] == {**row, "epoch": None}


# ------------------------------------------------------------- 8. off, and in memory


async def test_history_off_records_nothing_and_the_routes_say_so(tmp_path: Path) -> None:
    app = Quart(f"history_off_{next(_names)}", instance_path=str(tmp_path / "instance"))
    app.config.update(SCHEDULER_HISTORY=False, SCHEDULER_API_ENABLED=True)
    ext = APScheduler(app=app)
    executed = Recorder()
    finished = Recorder()
    with (
        job_executed.connected_to(executed, sender=app),
        run_finished.connected_to(finished, sender=app),
    ):
        async with app.test_app():
            ext.start()
            assert ext.history is None
            ext.add_job("tick", noop, trigger="interval", hours=1)
            await ext.run_job("tick")
            client = app.test_client()
            for path in (
                "/scheduler/runs",
                "/scheduler/jobs/tick/runs",
                "/scheduler/runs/running",
            ):
                response = await client.get(path)
                assert response.status_code == 503, path
                assert "off" in (await response.get_json())["error_message"]
            response = await client.get("/scheduler/jobs/tick")
            assert response.status_code == 200
            assert (await response.get_json())["last_run"] is None
            with pytest.raises(HistoryUnavailableError, match="off"):
                await ext.get_runs()

    assert len(executed) == 1 and len(finished) == 0
    # Only the coordination files (the lease and the fire ledger): no run is kept anywhere.
    files = [path.name for path in files_in(tmp_path)]
    assert all(name.startswith("quart_sched-") for name in files), files
    assert all(name.endswith((".lock", ".coordination.sqlite")) for name in files), files


async def test_in_memory_history_works(tmp_path: Path) -> None:
    app, ext = make_app(":memory:", SCHEDULER_API_ENABLED=True)
    async with served(app, ext):
        ext.add_job("tick", sleep_plain, args=[0.01], trigger="interval", hours=1)
        await ext.run_job("tick")
        (run,) = await all_runs(ext, "tick")
        assert run["outcome"] == "success"
        response = await app.test_client().get("/scheduler/jobs/tick")
        assert (await response.get_json())["last_run"]["run_id"] == run["run_id"]
    assert files_in(tmp_path) == []


# ---------------------------------------------------------- 9. a graceful stop flushes


async def quick_random(n: int) -> int:
    await asyncio.sleep((n % 7) / 1000)
    return n


async def test_graceful_stop_writes_every_run(db: Path) -> None:
    app, ext = make_app(db)
    executed = Recorder()
    with job_executed.connected_to(executed, sender=app):
        async with served(app, ext):
            ext.add_job(
                "fast_plain", noop_plain, trigger="interval", seconds=0.01, max_instances=50
            )
            for n in range(200):
                ext.add_job(f"fast_{n}", quick_random, args=[n], trigger="date")
                if n % 40 == 0:
                    await asyncio.sleep(0.1)
            # Out at once: runs are under way and most of them are not written yet.

    rows = file_rows(db)
    assert len(executed) >= 200
    assert [row for row in rows if row["outcome"] not in FINAL] == []
    succeeded = [row for row in rows if row["outcome"] == "success"]
    assert Counter(c["job_id"] for c in executed.calls) == Counter(r["job_id"] for r in succeeded)
    # (a fire of fast_plain may be skipped on a loaded machine: recorded, as it should be)
    assert {row["outcome"] for row in rows} <= {"success", "skipped"}


async def test_serving_twice_and_restarting_the_scheduler_keep_recording(db: Path) -> None:
    app, ext = make_app(db)
    for serve in range(2):
        async with served(app, ext):
            ext.add_job(f"serve_{serve}", noop, trigger="interval", hours=1)
            await ext.run_job(f"serve_{serve}")
            ext.shutdown()  # the scheduler stops, the app still serves: history stays open
            assert len(await all_runs(ext)) == 2 * serve + 1
            ext.start()
            await ext.run_job(f"serve_{serve}")
    assert Counter((row["job_id"], row["outcome"]) for row in file_rows(db)) == {
        ("serve_0", "success"): 2,
        ("serve_1", "success"): 2,
    }


async def gate_and_note(name: str) -> None:
    SEEN[name] = "started"
    try:
        await GATES[name].wait()
    finally:
        SEEN[name] = "ended"


async def test_stop_after_shutdown_without_wait_leaves_no_running_row(db: Path) -> None:
    app, ext = make_app(db, SCHEDULER_SHUTDOWN_TIMEOUT=0.2)
    GATES["nowait"] = gate = asyncio.Event()
    try:
        async with served(app, ext):
            ext.add_job("nowait", gate_and_note, args=["nowait"], trigger="date")
            await eventually(ext.get_running_runs, len)
            ext.shutdown(wait=False)
        (row,) = file_rows(db)
        assert row["outcome"] in FINAL, row["outcome"]
    finally:
        gate.set()  # let it end, however the scheduler left it
        await wait_until(lambda: SEEN.get("nowait") == "ended")


# ---------------------------------------------------------------- 10. run_finished


async def test_run_finished_fires_once_per_run_with_its_record(db: Path) -> None:
    app, ext = make_app(db, SCHEDULER_SHUTDOWN_TIMEOUT=0.2)
    finished = Recorder()
    late = datetime.now(timezone.utc) - timedelta(seconds=30)
    with run_finished.connected_to(finished, sender=app):
        async with served(app, ext):
            ext.add_job("ok", noop, trigger="date")
            ext.add_job("bad", fail_async, args=["bad"], trigger="date")
            ext.add_job("late", noop, trigger="date", run_date=late, misfire_grace_time=1)
            ext.add_job(
                "slow", sleep_async, args=[0.15], trigger="interval", seconds=0.05, max_instances=1
            )
            ext.add_job("hang", sleep_async, args=[60], trigger="date")
            await wait_until(
                lambda: (
                    {"success", "error", "missed", "skipped"}
                    <= {c["run"]["outcome"] for c in finished.calls}
                )
            )
            await eventually(lambda: all_runs(ext, "hang"), len)
            ext.pause_job("slow")
            db_runs = {run["run_id"]: run for run in await all_runs(ext)}

    interrupted = [c for c in finished.calls if c["run"]["outcome"] == "interrupted"]
    assert [c["job_id"] for c in interrupted] == ["hang"]
    counts = Counter(c["run"]["run_id"] for c in finished.calls)
    assert max(counts.values()) == 1, "run_finished fired twice for a run"
    rows = {row["run_id"]: row for row in file_rows(db)}
    assert counts.keys() == rows.keys()  # one signal per recorded run, none more
    for call in finished.calls:
        run = call["run"]
        assert call["job_id"] == run["job_id"]
        assert rows[run["run_id"]]["outcome"] == run["outcome"]
        assert call["scheduled_run_time"] is not None
        if run["run_id"] in db_runs and db_runs[run["run_id"]]["outcome"] != "running":
            assert db_runs[run["run_id"]] == run  # the record as the API shows it
    by_outcome = {c["run"]["outcome"]: c["run"] for c in finished.calls}
    assert by_outcome["error"]["error"] == "ValueError: bad"
    assert by_outcome["missed"]["started_at"] is None
    assert by_outcome["skipped"]["started_at"] is None
