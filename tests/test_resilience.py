"""The scheduler keeps waking up through job-store outages and never runs a fire twice.

Raw APScheduler 3 stops waking up for good after one exception from ``update_job`` or
``get_next_run_time``; quart_sched logs the failure, retries after
``SCHEDULER_JOBSTORE_RETRY_INTERVAL``, writes what the store missed before reading due jobs
again, and says when the store is back. Exercised on a locked SQLite file, on PostgreSQL
dropping its connections, and with a fault-injecting store.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from quart import Quart

from quart_sched import STATE_STOPPED, APScheduler
from quart_sched.signals import job_executed

import jobfuncs
from support import wait_until

_names = itertools.count()

FAILED = "Job store 'default' failed"
RECOVERED = "Job store 'default' is reachable again; resuming"


def make_app(store: Any, retry: float) -> tuple[Quart, APScheduler]:
    app = Quart(f"resilience_{next(_names)}")
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 2
    app.config["SCHEDULER_JOBSTORES"] = {"default": store}
    app.config["SCHEDULER_JOBSTORE_RETRY_INTERVAL"] = retry
    return app, APScheduler(app=app)


@asynccontextmanager
async def serving(app: Quart, scheduler: APScheduler) -> AsyncIterator[APScheduler]:
    async with app.test_app():
        scheduler.start()
        yield scheduler


def record_fires(scheduler: Any) -> list[datetime]:
    """The scheduled run time of every executed run, in completion order."""
    fires: list[datetime] = []

    def on_executed(event: JobExecutionEvent) -> None:
        fires.append(event.scheduled_run_time)

    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    return fires


async def wait_for_more(fires: list[datetime], count: int) -> None:
    """Wait until ``count`` more runs than now have been recorded."""
    target = len(fires) + count
    await wait_until(lambda: len(fires) >= target)


def assert_no_fire_ran_twice(fires: list[datetime]) -> None:
    repeated = [when for when, count in Counter(fires).items() if count > 1]
    assert not repeated, f"fires that ran more than once: {repeated}"


def store_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "quart_sched" and record.getMessage().startswith(FAILED)
    ]


def logged(caplog: pytest.LogCaptureFixture, message: str, level: int) -> bool:
    return any(
        record.name == "quart_sched" and record.levelno == level and message in record.getMessage()
        for record in caplog.records
    )


# ------------------------------------------------------------------- locked SQLite


@pytest.mark.parametrize("lock", ["EXCLUSIVE", "IMMEDIATE"])
async def test_locked_sqlite_store_pauses_firing_and_resumes_without_double_fires(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lock: str
) -> None:
    """EXCLUSIVE blocks every read; IMMEDIATE lets reads through but blocks the write that
    records a fire, so the scheduler must write it before it reads due jobs again."""
    caplog.set_level(logging.DEBUG, logger="quart_sched")
    db = tmp_path / "jobs.sqlite"
    store = SQLAlchemyJobStore(
        url=f"sqlite:///{db}", engine_options={"connect_args": {"timeout": 0.05}}
    )
    app, scheduler = make_app(store, retry=0.2)
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.2, args=["locked"])

    fires: list[datetime] = []

    def on_executed(sender: Quart, job_id: str, scheduled_run_time: datetime, **_: Any) -> None:
        fires.append(scheduled_run_time)

    with job_executed.connected_to(on_executed, sender=app):
        async with serving(app, scheduler):
            await wait_until(lambda: len(fires) >= 2)
            with closing(sqlite3.connect(db, isolation_level=None)) as holder:
                holder.execute(f"BEGIN {lock}")
                try:
                    await wait_until(lambda: logged(caplog, FAILED, logging.WARNING))
                    # One more failed try: a run submitted before the failure has finished.
                    await wait_until(lambda: len(store_failures(caplog)) >= 2)
                    while_locked = len(fires)
                    await wait_until(lambda: len(store_failures(caplog)) >= 5)
                    assert len(fires) == while_locked, "ran a job from stale state"
                    assert not logged(caplog, RECOVERED, logging.WARNING)
                finally:
                    holder.execute("ROLLBACK")
            await wait_until(lambda: logged(caplog, RECOVERED, logging.WARNING))
            await wait_for_more(fires, 2)
    assert_no_fire_ran_twice(fires)


async def test_lasting_sqlite_outage_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="quart_sched")
    db = tmp_path / "jobs.sqlite"
    store = SQLAlchemyJobStore(
        url=f"sqlite:///{db}", engine_options={"connect_args": {"timeout": 0.05}}
    )
    app, scheduler = make_app(store, retry=0.1)
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.1, args=["outage"])
    async with serving(app, scheduler):
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            try:
                await wait_until(lambda: len(store_failures(caplog)) >= 4)
            finally:
                holder.execute("ROLLBACK")
    levels = [record.levelno for record in store_failures(caplog)]
    assert levels[0] == logging.WARNING
    assert set(levels[1:]) == {logging.DEBUG}


# ------------------------------------------------------------ fault-injecting store


class Faults:
    """How many more times each store method fails; shared by a store and its copies."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()
        self.raised: Counter[str] = Counter()

    def arm(self, method: str, times: int) -> None:
        self.pending[method] = times

    def check(self, method: str) -> None:
        if self.pending[method] > 0:
            self.pending[method] -= 1
            self.raised[method] += 1
            raise ConnectionError(f"injected failure of {method}")


class FlakyStore(MemoryJobStore):  # type: ignore[misc]
    """A memory store that fails on demand and, like a database-backed store, hands out
    and keeps copies of jobs: a missed ``update_job`` leaves the old next run time in it."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def _copy(self, job: Job) -> Job:
        copied: Job = Job.__new__(Job)
        copied.__setstate__(job.__getstate__())
        copied._scheduler = self._scheduler
        copied._jobstore_alias = self._alias
        return copied

    def add_job(self, job: Job) -> None:
        super().add_job(self._copy(job))

    def update_job(self, job: Job) -> None:
        self.faults.check("update_job")
        super().update_job(self._copy(job))

    def lookup_job(self, job_id: str) -> Job | None:
        job = super().lookup_job(job_id)
        return None if job is None else self._copy(job)

    def get_all_jobs(self) -> list[Job]:
        return [self._copy(job) for job in super().get_all_jobs()]

    def get_due_jobs(self, now: datetime) -> list[Job]:
        self.faults.check("get_due_jobs")
        return [self._copy(job) for job in super().get_due_jobs(now)]

    def get_next_run_time(self) -> datetime | None:
        self.faults.check("get_next_run_time")
        next_run: datetime | None = super().get_next_run_time()
        return next_run


STORE_METHODS = ["get_due_jobs", "update_job", "get_next_run_time"]


@pytest.mark.parametrize("method", STORE_METHODS)
async def test_scheduler_keeps_firing_after_store_errors(
    caplog: pytest.LogCaptureFixture, method: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="quart_sched")
    faults = Faults()
    app, scheduler = make_app(FlakyStore(faults), retry=0.1)
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.1, args=["flaky"])
    fires = record_fires(scheduler)

    async with serving(app, scheduler):
        await wait_until(lambda: len(fires) >= 2)
        faults.arm(method, 3)
        await wait_until(lambda: faults.raised[method] == 3)
        await wait_for_more(fires, 3)

    assert_no_fire_ran_twice(fires)
    assert logged(caplog, f"{FAILED} (ConnectionError: injected failure of {method})", 30)
    assert logged(caplog, RECOVERED, logging.WARNING)


@pytest.mark.parametrize("method", ["update_job", "get_next_run_time"])
async def test_raw_apscheduler_stops_firing_after_one_store_error(method: str) -> None:
    """Control: the same faults stop APScheduler 3's own AsyncIOScheduler for good, so the
    test above proves quart_sched's rewrite matters."""
    faults = Faults()
    raw = AsyncIOScheduler(jobstores={"default": FlakyStore(faults)}, jobstore_retry_interval=0.1)
    raw.add_job(jobfuncs.tick, "interval", seconds=0.1, args=["raw"], id="beat")
    fires = record_fires(raw)
    raw.start()
    try:
        await wait_until(lambda: len(fires) >= 2)
        faults.arm(method, 1)
        await wait_until(lambda: faults.raised[method] == 1)
        stalled_at = len(fires)
        # Ten intervals: a working scheduler fires about ten times (the run submitted in
        # the failing pass may still complete).
        with pytest.raises(AssertionError, match="condition not met"):
            await wait_until(lambda: len(fires) > stalled_at + 1, timeout=1.0)
    finally:
        raw.shutdown(wait=False)
        await wait_until(lambda: raw.state == STATE_STOPPED)
        await asyncio.sleep(0)


# -------------------------------------------------------------------- PostgreSQL

PG_USERS = ("postgres", "root")


@pytest.fixture
def pg_url() -> str:
    """A SQLAlchemy URL of the local test database; skipped when there is none (not in CI)."""
    reason = "PostgreSQL not reachable at 127.0.0.1:5432"
    try:
        import psycopg
    except ImportError:
        reason = "psycopg (v3) is not installed: add 'psycopg[binary]' to the test extra"
    else:
        for user in PG_USERS:
            try:
                with psycopg.connect(
                    f"postgresql://{user}@127.0.0.1:5432/test", connect_timeout=2
                ) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:
                continue
            return f"postgresql+psycopg://{user}@127.0.0.1:5432/test"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[str]:
    """A table name of this test's own, dropped afterwards."""
    import psycopg

    name = f"quart_sched_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def terminate_backends(pg_url: str, application_name: str) -> int:
    """What a database restart does to a client: drop the store's connections."""
    import psycopg

    # Only the connections this test's store opened: other sessions on the same
    # database (another test run) are left alone.
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'test' AND pid <> pg_backend_pid() AND application_name = %s",
            (application_name,),
        ).fetchall()
    return sum(1 for (terminated,) in rows if terminated)


async def test_scheduler_keeps_firing_when_postgres_drops_its_connections(
    pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="quart_sched")
    application_name = pg_table
    store = SQLAlchemyJobStore(
        url=pg_url,
        tablename=pg_table,
        engine_options={"connect_args": {"application_name": application_name}},
    )
    app, scheduler = make_app(store, retry=0.2)
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.2, args=["pg"])
    fires = record_fires(scheduler)

    async with serving(app, scheduler):
        await wait_until(lambda: len(fires) >= 2)
        for _ in range(2):
            assert terminate_backends(pg_url, application_name) >= 1
            await wait_for_more(fires, 2)
    assert_no_fire_ran_twice(fires)
    assert logged(caplog, FAILED, logging.WARNING)
    assert logged(caplog, RECOVERED, logging.WARNING)


async def test_postgres_table_lock_delays_writes_without_double_fires(
    pg_url: str, pg_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads go through a locked table while the write recording a fire times out: the
    scheduler writes it before it reads due jobs again, so that fire does not run twice."""
    import psycopg

    caplog.set_level(logging.DEBUG, logger="quart_sched")
    store = SQLAlchemyJobStore(
        url=pg_url,
        tablename=pg_table,
        engine_options={"connect_args": {"options": "-c lock_timeout=50"}},
    )
    app, scheduler = make_app(store, retry=0.2)
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.2, args=["pg-lock"])
    fires = record_fires(scheduler)

    async with serving(app, scheduler):
        await wait_until(lambda: len(fires) >= 2)
        with psycopg.connect(pg_url.replace("+psycopg", "")) as holder:
            holder.execute(f'LOCK TABLE "{pg_table}" IN EXCLUSIVE MODE')
            try:
                await wait_until(lambda: logged(caplog, FAILED, logging.WARNING))
                await wait_until(lambda: len(store_failures(caplog)) >= 2)
                while_locked = len(fires)
                await wait_until(lambda: len(store_failures(caplog)) >= 4)
                assert len(fires) == while_locked, "ran a job from stale state"
            finally:
                holder.rollback()
        await wait_until(lambda: logged(caplog, RECOVERED, logging.WARNING))
        await wait_for_more(fires, 2)
    assert_no_fire_ran_twice(fires)
