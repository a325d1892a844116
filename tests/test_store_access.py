"""Job stores are reached off the serving loop, on one thread per store, and what they
cannot load is kept.

- ``sqlite://`` (an in-memory database per connection thread, the seed tutorial's config)
  works on every route: every call reaches it from the same thread.
- A locked SQLite store leaves the loop free: a coroutine keeps ticking and an app route
  keeps answering while the scheduler's pass waits on the lock.
- A fire is recorded in the store before it runs, so a write the store refused never runs
  a fire twice, and an API write acknowledged during an outage sticks.
- Catch-up after an outage follows coalesce and misfire_grace_time.
- A stored job whose code is gone is kept, shown with its load error, refused for runs
  and changes, logged once, and runs again once its code is back.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from quart import Quart

from quart_sched import APScheduler

import jobfuncs
from support import wait_until

_names = itertools.count()


def make_app(store: Any, **config: Any) -> tuple[Quart, APScheduler]:
    app = Quart(f"store_access_{next(_names)}")
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 2
    app.config["SCHEDULER_API_ENABLED"] = True
    app.config["SCHEDULER_HISTORY"] = False
    app.config["SCHEDULER_JOBSTORES"] = {"default": store}
    app.config.update(config)
    return app, APScheduler(app=app)


@asynccontextmanager
async def serving(app: Quart, scheduler: APScheduler) -> AsyncIterator[APScheduler]:
    async with app.test_app():
        scheduler.start()
        yield scheduler


# ------------------------------------------------------------------- sqlite:// (memory)


async def test_in_memory_sqlalchemy_store_works_on_every_route() -> None:
    """The seed tutorial's ``SQLAlchemyJobStore(url='sqlite://')``: one database per
    connection thread, so every call must come from the same thread."""
    app, scheduler = make_app(SQLAlchemyJobStore(url="sqlite://"))
    name = f"memory-sqlite-{next(_names)}"
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.2, args=[name])
    client = app.test_client()
    async with serving(app, scheduler):
        await wait_until(lambda: jobfuncs.RUNS[name] >= 2)

        listed = await client.get("/scheduler/jobs")
        assert listed.status_code == 200, await listed.get_data(as_text=True)
        assert [job["id"] for job in await listed.get_json()] == ["beat"]

        added = await client.post(
            "/scheduler/jobs",
            json={
                "id": "added",
                "func": "jobfuncs:tick",
                "args": [name + "-added"],
                "trigger": "interval",
                "seconds": 1,
            },
        )
        assert added.status_code == 200, await added.get_data(as_text=True)
        await wait_until(lambda: jobfuncs.RUNS[name + "-added"] >= 1, timeout=5)

        paused = await client.post("/scheduler/jobs/beat/pause")
        assert paused.status_code == 200
        assert (await paused.get_json())["next_run_time"] is None
        after_pause = jobfuncs.RUNS[name]
        changed = await client.patch("/scheduler/jobs/added", json={"args": ["other"]})
        assert changed.status_code == 200
        assert (await changed.get_json())["args"] == ["other"]
        fetched = await client.get("/scheduler/jobs/added")
        assert (await fetched.get_json())["args"] == ["other"]
        await asyncio.sleep(0.5)
        assert jobfuncs.RUNS[name] <= after_pause + 1  # a run already under way may end

        assert (await client.delete("/scheduler/jobs/added")).status_code == 204
        assert (await client.get("/scheduler/jobs/added")).status_code == 404


# ------------------------------------------------------------------- a locked store


async def test_locked_sqlite_store_leaves_the_loop_free(tmp_path: Path) -> None:
    """With SQLite's default 5 s busy timeout, every store call waits while another
    process holds the file: the loop must keep running meanwhile."""
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(
        SQLAlchemyJobStore(url=f"sqlite:///{db}"), SCHEDULER_JOBSTORE_RETRY_INTERVAL=0.2
    )

    @app.route("/health")
    async def health() -> str:
        return "ok"

    name = f"locked-{next(_names)}"
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.1, args=[name])
    client = app.test_client()
    async with serving(app, scheduler):
        await wait_until(lambda: jobfuncs.RUNS[name] >= 2)
        gaps: list[float] = []
        answered: list[int] = []
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            try:
                last = time.monotonic()
                deadline = last + 3.0
                while time.monotonic() < deadline:
                    response = await client.get("/health")
                    answered.append(response.status_code)
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
            finally:
                holder.execute("ROLLBACK")
        # Blocked on the store, the loop would stall for the whole 5 s busy timeout.
        assert max(gaps) < 1.0, f"the loop stalled for {max(gaps):.2f} s"
        assert answered and set(answered) == {200}
        before = jobfuncs.RUNS[name]
        await wait_until(lambda: jobfuncs.RUNS[name] >= before + 2, timeout=10)


async def test_api_write_during_a_write_outage_sticks(tmp_path: Path) -> None:
    """Reads work, writes are locked out (BEGIN IMMEDIATE by another process): a pause
    either fails with 503 and changes nothing, or is acknowledged and stays."""
    db = tmp_path / "jobs.sqlite"
    store = SQLAlchemyJobStore(
        url=f"sqlite:///{db}", engine_options={"connect_args": {"timeout": 0.3}}
    )
    app, scheduler = make_app(store, SCHEDULER_JOBSTORE_RETRY_INTERVAL=0.1)
    name = f"outage-pause-{next(_names)}"
    scheduler.add_job("beat", jobfuncs.tick, trigger="interval", seconds=0.1, args=[name])
    client = app.test_client()
    async with serving(app, scheduler):
        await wait_until(lambda: jobfuncs.RUNS[name] >= 2)
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            try:
                refused = await client.post("/scheduler/jobs/beat/pause")
                assert refused.status_code == 503, await refused.get_data(as_text=True)
            finally:
                holder.execute("ROLLBACK")
        # Refused: nothing changed, the job still fires.
        before = jobfuncs.RUNS[name]
        await wait_until(lambda: jobfuncs.RUNS[name] >= before + 2)
        # A pause acknowledged between outages stays, across the next outage too.
        paused = await client.post("/scheduler/jobs/beat/pause")
        assert paused.status_code == 200
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            await asyncio.sleep(0.5)
            holder.execute("ROLLBACK")
        settled = jobfuncs.RUNS[name]
        await asyncio.sleep(0.6)
        assert jobfuncs.RUNS[name] <= settled + 1  # at most a run that had already begun
        fetched = await client.get("/scheduler/jobs/beat")
        assert (await fetched.get_json())["next_run_time"] is None
    with closing(sqlite3.connect(db)) as conn:
        (next_run,) = conn.execute(
            "SELECT next_run_time FROM apscheduler_jobs WHERE id = 'beat'"
        ).fetchone()
    assert next_run is None, "the acknowledged pause was undone"


# -------------------------------------------------------------------------- catch-up


@pytest.mark.parametrize(("coalesce", "expected"), [(True, 1), (False, 5)])
async def test_catch_up_after_an_outage_follows_coalesce(
    tmp_path: Path, coalesce: bool, expected: int
) -> None:
    """Five fires of a 10 s job fell due while the store was locked: coalesce runs one,
    otherwise all five (inside the grace time), each exactly once."""
    db = tmp_path / "jobs.sqlite"
    store = SQLAlchemyJobStore(
        url=f"sqlite:///{db}", engine_options={"connect_args": {"timeout": 0.05}}
    )
    app, scheduler = make_app(store, SCHEDULER_JOBSTORE_RETRY_INTERVAL=0.1)
    fires: list[datetime] = []

    def record(event: Any) -> None:
        fires.append(event.scheduled_run_time)

    scheduler.add_listener(record, EVENT_JOB_EXECUTED)
    scheduler.add_job(
        "beat",
        jobfuncs.tick,
        trigger="interval",
        seconds=10,
        start_date=datetime.now(timezone.utc) + timedelta(seconds=60),
        args=[f"catch-up-{next(_names)}"],
        coalesce=coalesce,
        misfire_grace_time=120,
    )
    async with serving(app, scheduler):
        # Five fires of the job fell due while nothing ran...
        scheduler.pause()
        scheduler.modify_job(
            "beat", next_run_time=datetime.now(timezone.utc) - timedelta(seconds=45)
        )
        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            try:
                scheduler.resume()  # ...and the store is locked when it resumes
                await asyncio.sleep(0.3)
            finally:
                holder.execute("ROLLBACK")
        await wait_until(lambda: len(fires) >= expected, timeout=10)
        await asyncio.sleep(0.3)  # time for a wrong extra run to show up
    assert len(fires) == expected, fires
    assert len(set(fires)) == len(fires), f"a fire ran twice: {fires}"
    assert max(fires) <= datetime.now(timezone.utc)


# --------------------------------------------------------------------- unloadable jobs


async def test_job_whose_code_is_gone_is_kept_and_runs_again_once_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger="quart_sched")
    module = f"gone_jobs_{next(_names)}"
    source = tmp_path / f"{module}.py"
    marker = tmp_path / "ran.txt"
    source.write_text(
        "def beat(path):\n    with open(path, 'a') as file:\n        file.write('ran')\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    db = tmp_path / "jobs.sqlite"

    def new_app() -> tuple[Quart, APScheduler]:
        return make_app(
            SQLAlchemyJobStore(url=f"sqlite:///{db}"), SCHEDULER_JOBSTORE_RETRY_INTERVAL=0.2
        )

    # A first deployment stores the job.
    app, scheduler = new_app()
    async with serving(app, scheduler):
        scheduler.add_job(
            "beat", f"{module}:beat", trigger="interval", seconds=0.2, args=[str(marker)]
        )
        await wait_until(lambda: marker.exists())

    # The next one lacks the module.
    source.rename(tmp_path / "elsewhere.py.txt")
    sys.modules.pop(module, None)
    importlib.invalidate_caches()
    app, scheduler = new_app()
    client = app.test_client()
    async with serving(app, scheduler):
        unloadable = (
            f"Job 'beat' cannot be loaded (LookupError: Error resolving reference {module}:beat"
        )
        await wait_until(lambda: unloadable in caplog.text)
        listed = await (await client.get("/scheduler/jobs")).get_json()
        assert [job["id"] for job in listed] == ["beat"]
        assert "could not import module" in listed[0]["load_error"]
        assert listed[0]["func"] == f"{module}:beat"
        refused = await client.post("/scheduler/jobs/beat/run")
        assert refused.status_code == 409
        assert "cannot be loaded" in (await refused.get_json())["error_message"]
        assert (await client.post("/scheduler/jobs/beat/pause")).status_code == 409
        # Retried on every pass, warned about once.
        await asyncio.sleep(0.6)
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and unloadable in r.message
        ]
        assert len(warnings) == 1
        with closing(sqlite3.connect(db)) as conn:
            assert conn.execute("SELECT id FROM apscheduler_jobs").fetchall() == [("beat",)]

        # The code comes back: the kept job runs again, without a restart.
        marker.unlink()
        (tmp_path / "elsewhere.py.txt").rename(source)
        importlib.invalidate_caches()
        await wait_until(lambda: marker.exists(), timeout=10)
        listed = await (await client.get("/scheduler/jobs")).get_json()
        assert listed[0]["load_error"] is None


# ------------------------------------------------------------------- awaitable twins


async def test_awaitable_twins_wait_in_a_thread(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(SQLAlchemyJobStore(url=f"sqlite:///{db}"))
    name = f"twins-{next(_names)}"
    async with serving(app, scheduler):
        job = await scheduler.aadd_job(
            "twin", jobfuncs.tick, trigger="interval", hours=1, args=[name]
        )
        assert job.id == "twin"
        assert [j.id for j in await scheduler.aget_jobs()] == ["twin"]
        assert (await scheduler.apause_job("twin")).next_run_time is None
        resumed = await scheduler.aresume_job("twin")
        assert resumed is not None and resumed.next_run_time is not None
        assert (await scheduler.amodify_job("twin", args=["changed"])).args == ["changed"]
        fetched = await scheduler.aget_job("twin")
        assert fetched is not None and list(fetched.args) == ["changed"]

        # While another process holds the file, the twin waits off the loop.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        with closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            ticking = asyncio.ensure_future(ticker())
            pausing = asyncio.ensure_future(scheduler.apause_job("twin"))
            await asyncio.sleep(0.5)
            assert not pausing.done()
            holder.execute("ROLLBACK")
        assert (await pausing).next_run_time is None
        ticking.cancel()
        assert ticks >= 10, "the loop stalled while the store was locked"

        await scheduler.aremove_job("twin")
        assert await scheduler.aget_job("twin") is None
        await scheduler.aadd_job("other", jobfuncs.tick, trigger="interval", hours=1, args=[name])
        await scheduler.aremove_all_jobs()
        assert await scheduler.aget_jobs() == []
