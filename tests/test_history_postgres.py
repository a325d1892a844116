"""Run history in PostgreSQL: what a history shared by hosts adds to the SQLite one.

(The behaviours both backends share run against both in tests/test_history.py, through
its ``location`` fixture.) Here:

* ``SCHEDULER_HISTORY`` takes ``postgresql://``, ``postgres://`` and
  ``postgresql+psycopg://`` URLs; its location never shows the password; the package
  imports without psycopg, and a URL then says what to install;
* recorders of two hosts writing to one database each see the runs of both, and so does
  an app's REST API;
* an outage (the server ends the history's connection; the server cannot be reached for a
  while) loses no record that was acknowledged, and the history answers again after it;
* runs of a process killed on this host, and of a process of another host whose heartbeat
  stopped, are marked interrupted; those of a live process are not;
* processes creating the tables at the same time all succeed.

Each test has a PostgreSQL schema of its own (tests/history_support.py); without a server
they are skipped, naming PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from apps.harness import python
from quart import Quart

from quart_sched import APScheduler, _history
from quart_sched._history import RunHistory, make_recorder
from quart_sched.errors import ConfigurationError, HistoryUnavailableError

from history_support import (
    Proxy,
    pg_rows,
    postgres_schema,
    schema_of,
    terminate_history_connections,
)
from support import free_port, wait_until

APPS = Path(__file__).parent / "apps"
T = TypeVar("T")
FINAL = {"success", "error", "missed", "skipped", "interrupted"}


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def recorder(url: str, **options: Any) -> Any:
    """A PostgreSQL history (imported here: the module needs psycopg)."""
    from quart_sched._history_pg import PostgresRunHistory

    options.setdefault("host", "here")
    return PostgresRunHistory(url, **options)


@asynccontextmanager
async def held(*histories: Any) -> AsyncIterator[None]:
    """The histories open (their writers running) for the block; closed after it."""
    for history in histories:
        history.hold("test")
    try:
        yield
    finally:
        for history in histories:
            await history.release("test")


async def eventually(
    fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], object], timeout: float = 10.0
) -> T:
    """Await ``fetch()`` every 20 ms until ``predicate`` holds for its result; return it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await fetch()
        except HistoryUnavailableError as exc:  # not open yet, or the outage goes on
            value = exc  # type: ignore[assignment]
        else:
            if predicate(value):
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")
        await asyncio.sleep(0.02)


async def all_runs(history: Any, job_id: str | None = None) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await history.runs(job_id, limit=500, cursor=cursor)
        runs += page.runs
        if page.next_cursor is None:
            return runs
        cursor = page.next_cursor


def record(history: Any, job_id: str, count: int) -> dict[str, str]:
    """``count`` runs of ``job_id`` that start and succeed; run id -> outcome, as
    acknowledged (the calls returned)."""
    done = {}
    for _ in range(count):
        run_id = history.started(job_id, None)
        done[run_id] = history.finished(run_id, "success")[2]
    return done


async def rows_in_database(url: str) -> dict[str, str]:
    """run id -> outcome of every row, read over a connection of the test's own."""
    rows = await asyncio.to_thread(pg_rows, url)
    return {row["run_id"]: row["outcome"] for row in rows}


# ----------------------------------------------------------------- URLs and wiring


@pytest.mark.parametrize(
    ("given", "libpq"),
    [
        (
            "postgresql://app:s3cret@db.example:5433/runs",
            "postgresql://app:s3cret@db.example:5433/runs",
        ),
        ("postgres://app:s3cret@db.example/runs", "postgres://app:s3cret@db.example/runs"),
        (
            "postgresql+psycopg://app:s3cret@db.example/runs?sslmode=require&password=s3cret",
            "postgresql://app:s3cret@db.example/runs?sslmode=require&password=s3cret",
        ),
    ],
)
def test_postgresql_urls_pick_the_shared_history_and_hide_the_password(
    given: str, libpq: str
) -> None:
    history = make_recorder(given, keep_runs=None, keep_days=None, host="h")
    assert type(history).__name__ == "PostgresRunHistory"
    assert history.url == libpq  # type: ignore[attr-defined]  # what psycopg is given
    assert "s3cret" not in history.location
    assert history.location.split("//")[1].startswith("app@db.example")
    assert "password" not in history.location


def test_paths_still_pick_the_sqlite_history(tmp_path: Path) -> None:
    for location in (str(tmp_path / "runs.sqlite"), ":memory:", "relative/runs.sqlite"):
        history = make_recorder(location, keep_runs=5, keep_days=None, host="h")
        assert isinstance(history, RunHistory) and history.location == location


def test_config_passes_a_url_through_and_refuses_other_schemes(tmp_path: Path) -> None:
    url = "postgresql://127.0.0.1/test?options=-csearch_path%3Dx"
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config["SCHEDULER_HISTORY"] = url
    ext = APScheduler(app=app)
    assert ext.history is not None and ext.history.location == url
    other = Quart(__name__, instance_path=str(tmp_path))
    other.config["SCHEDULER_HISTORY"] = "mysql://db/runs"
    with pytest.raises(ConfigurationError, match="'mysql://' URLs are not supported"):
        APScheduler(app=other)


WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None  # as if it were not installed
import quart_sched
from quart_sched._history import make_recorder
from quart_sched.errors import ConfigurationError
assert "quart_sched._history_pg" not in sys.modules
try:
    make_recorder("postgresql://db/runs", keep_runs=None, keep_days=None, host="h")
except ConfigurationError as exc:
    print(exc)
"""


def test_without_psycopg_the_package_imports_and_a_url_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_PSYCOPG], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'quart-sched[postgresql]'" in done.stdout


# ---------------------------------------------------------------- shared by hosts


async def noop() -> None:
    pass


async def test_two_hosts_writing_to_one_database_each_see_the_runs_of_both(url: str) -> None:
    host_a, host_b = recorder(url, host="host-a"), recorder(url, host="host-b")
    app = Quart(__name__)
    app.config.update(SCHEDULER_HISTORY=url, SCHEDULER_API_ENABLED=True)
    ext = APScheduler(app=app)  # a third process's API, on this machine's host name
    async with held(host_a, host_b), app.test_app():
        ext.start()
        a_runs = record(host_a, "job_a", 3)
        b_runs = record(host_b, "job_b", 2)
        b_running = host_b.started("job_b", None)
        ext.add_job("job_app", noop, trigger="interval", hours=1)
        await ext.run_job("job_app")
        await host_a.runs()  # each writes what it holds before it reads
        await host_b.runs()
        expected = {**a_runs, **b_runs, b_running: "running"}

        for history in (host_a, host_b):
            runs = await eventually(
                lambda history=history: all_runs(history), lambda runs: len(runs) == 7
            )
            by_id = {run["run_id"]: run for run in runs}
            assert {key: by_id[key]["outcome"] for key in expected} == expected
            assert {run["host"] for run in runs} == {"host-a", "host-b", ext.host_name}
            (running,) = await history.running()
            assert (running["run_id"], running["host"]) == (b_running, "host-b")
            last = await history.last_runs(["job_a", "job_b", "job_app", "none"])
            assert last.keys() == {"job_a", "job_b", "job_app"}
            assert last["job_b"]["run_id"] == b_running

        response = await app.test_client().get("/scheduler/runs", query_string={"limit": "500"})
        served = await response.get_json()
        assert Counter(run["job_id"] for run in served) == {"job_a": 3, "job_b": 3, "job_app": 1}
        host_b.finished(b_running, "success")


async def test_histories_creating_the_tables_together_all_succeed(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    histories = [recorder(url, host=f"host-{n}", retry_interval=0.1) for n in range(4)]
    with caplog.at_level(logging.ERROR, logger="quart_sched"):
        async with held(*histories):
            for history in histories:
                await eventually(history.running, lambda runs: runs == [])
    assert "cannot be used" not in caplog.text


async def test_keep_days_drops_old_runs_of_every_host_and_keeps_those_under_way(url: str) -> None:
    history = recorder(url, keep_days=30)
    other_host = recorder(url, host="elsewhere")
    async with held(history, other_host):
        old = record(history, "old", 3) | record(other_host, "old", 2)
        under_way = history.started("long", None)
        await other_host.running()  # written
        await until_in_database(url, old | {under_way: "running"})
        await asyncio.to_thread(age_rows, url, 40)
        recent = record(history, "old", 1)
        assert await history.enforce_retention() == 5
        runs = await all_runs(history)
        history.finished(under_way, "success")
    assert {run["run_id"] for run in runs} == {under_way, *recent}


def age_rows(url: str, days: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE quart_sched_runs SET at = at - %s", (days * 86400,))


# ------------------------------------------------------------------------- outages


async def until_in_database(url: str, expected: dict[str, str]) -> None:
    """Wait until the rows in the database are ``expected``: no more, no fewer."""
    await eventually(lambda: rows_in_database(url), lambda rows: rows == expected)


async def test_a_terminated_connection_loses_no_acknowledged_record(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    history = recorder(url, retry_interval=0.05, flush_interval=0.02)
    acknowledged: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="quart_sched"):
        async with held(history):
            await eventually(history.running, lambda runs: runs == [])
            for _ in range(3):
                long_run = history.started("long", None)
                acknowledged[long_run] = "running"
                acknowledged |= record(history, "quick", 50)
                await until_in_database(url, acknowledged)
                assert terminate_history_connections(url) == 1
                # The writer does not know yet: it tries these on the dead connection,
                # keeps them, and writes them over a new one.
                acknowledged |= record(history, "quick", 50)
                row = history.finished(long_run, "error", error=ValueError("cut"))
                acknowledged[long_run] = row[2]
                await until_in_database(url, acknowledged)
            runs = await all_runs(history, "long")
            assert [run["error"] for run in runs] == ["ValueError: cut"] * 3
    assert any("cannot be used" in r.getMessage() for r in caplog.records), "not cut"
    assert "writable again" in caplog.text


async def test_records_wait_in_memory_while_the_server_cannot_be_reached(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy()
    await proxy.start()
    history = recorder(proxy.url(schema_of(url)), retry_interval=0.1, flush_interval=0.02)
    try:
        async with held(history):
            before = record(history, "before", 5)
            await until_in_database(url, before)
            proxy.cut()  # connections dropped, new ones turned away
            during = record(history, "during", 30)
            await wait_until(lambda: history.error is not None)
            with pytest.raises(HistoryUnavailableError, match="cannot be"):
                await history.runs()
            # Kept in memory up to MAX_BUFFERED records; past that the oldest go.
            monkeypatch.setattr(_history, "MAX_BUFFERED", 40)
            with caplog.at_level(logging.WARNING, logger="quart_sched"):
                more = record(history, "more", 30)
            assert "records dropped" in caplog.text
            await asyncio.sleep(0.3)  # a few reconnections fail meanwhile
            assert history.error is not None
            proxy.restore()
            kept = dict(list(during.items())[20:])
            await until_in_database(url, before | kept | more)
            await wait_until(lambda: history.error is None)
            assert len(await all_runs(history)) == 5 + 10 + 30
    finally:
        await proxy.close()


# --------------------------------------------------------- runs of dead processes


def running_line(child: Any) -> str | None:
    """The ``running <run_id>`` line of a pg_recorder.py child, once it printed it."""
    return next((line for line in child.stdout if line.startswith("running ")), None)


async def test_worker_killed_mid_run_is_marked_interrupted_by_the_next_process(url: str) -> None:
    with python("history_app.py", cwd=APPS, HISTORY=url, PORT=str(free_port())) as proc:
        deadline = time.monotonic() + 15
        while True:
            rows = await asyncio.to_thread(pg_rows, url)
            final = {row["job_id"] for row in rows if row["outcome"] in FINAL}
            long_job = [row for row in rows if row["job_id"] == "long_job"]
            if {"quick_1", "quick_2", "quick_3", "failing"} <= final and long_job:
                break
            assert time.monotonic() < deadline, f"runs not recorded\n{proc.dump()}"
            assert proc.popen.poll() is None, proc.dump()
            await asyncio.sleep(0.05)
        proc.send(signal.SIGKILL)
        assert proc.wait_exit() == -signal.SIGKILL

    before = {row["id"]: row for row in await asyncio.to_thread(pg_rows, url)}
    (stuck,) = [row for row in before.values() if row["job_id"] == "long_job"]
    assert stuck["outcome"] == "running" and stuck["pid"] == proc.pid

    history = recorder(url, host=stuck["host"])  # the next process on the same host
    async with held(history):
        await eventually(history.running, lambda runs: runs == [])
        (run,) = await all_runs(history, "long_job")
    assert (run["outcome"], run["error_type"]) == ("interrupted", "ProcessDied")
    assert run["run_id"] == stuck["run_id"]
    after = {row["id"]: row for row in await asyncio.to_thread(pg_rows, url)}
    assert after.keys() == before.keys()
    assert all(after[key] == row for key, row in before.items() if key != stuck["id"])


async def test_runs_of_a_process_of_another_host_are_interrupted_once_its_heartbeat_stops(
    url: str,
) -> None:
    # A pid means nothing on another host: the heartbeat tells a live process from a dead
    # one. Both children beat every 0.2 s; the dead one stops when it is killed.
    with (
        python("pg_recorder.py", cwd=APPS, HISTORY=url, HOST="host-dead", HEARTBEAT="0.2") as dead,
        python("pg_recorder.py", cwd=APPS, HISTORY=url, HOST="host-live", HEARTBEAT="0.2") as live,
    ):
        for child in (dead, live):
            child.wait_for(lambda c=child: running_line(c), what="its run written")
        dead_run, live_run = (str(running_line(child)).split()[1] for child in (dead, live))
        dead.send(signal.SIGKILL)
        assert dead.wait_exit() == -signal.SIGKILL

        history = recorder(url, heartbeat_interval=0.2, stale_after=3.0)
        async with held(history):
            # The same look that finds the dead one stale would find the live one stale
            # too, had it stopped beating: it started at the same time.
            runs = await eventually(
                lambda: all_runs(history, "forever"),
                lambda runs: any(r["outcome"] == "interrupted" for r in runs),
            )
        by_id = {run["run_id"]: run for run in runs}
        assert (by_id[dead_run]["outcome"], by_id[dead_run]["error_type"]) == (
            "interrupted",
            "ProcessDied",
        )
        assert by_id[live_run]["outcome"] == "running", live.dump()
