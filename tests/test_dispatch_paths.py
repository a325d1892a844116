"""The fast dispatch paths (docs/performance.md): plain functions handed back to the loop
in batches, a large due batch submitted in slices, and the same outcomes as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from quart import Quart, current_app, g

from quart_sched import APScheduler
from quart_sched import _history as history_module
from quart_sched._history import RunHistory
from quart_sched._scheduler import wakeup
from quart_sched.errors import HistoryUnavailableError

from support import wait_until


def _soon(seconds: float = 0.3) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


async def test_plain_runs_come_back_to_the_loop_in_batches(
    app: Quart, scheduler: APScheduler
) -> None:
    """Runs that finish while the loop is busy cost the loop one wake-up together, not
    one each (run_in_executor's future costs one per run)."""
    n = 20
    done: list[str] = []
    executed: list[JobExecutionEvent] = []

    def plain(i: int) -> None:
        done.append(f"{current_app.name}:{i}")

    async def hog() -> None:
        # Holds the loop while the threads finish every plain run.
        await asyncio.to_thread(lambda: None)
        deadline = time.monotonic() + 5
        while len(done) < n and time.monotonic() < deadline:
            time.sleep(0.01)  # noqa: ASYNC251 - blocking the loop is the point
        time.sleep(0.05)  # noqa: ASYNC251

    at = _soon()
    for i in range(n):
        scheduler.add_job(f"a{i:02}", plain, trigger="date", run_date=at, args=[i])
    scheduler.add_job("z", hog, trigger="date", run_date=at)
    scheduler.scheduler.add_listener(lambda e: executed.append(e), EVENT_JOB_EXECUTED)
    scheduler.start()
    async with app.test_app():
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            if threading.current_thread().name.startswith("quart_sched-"):
                calls += 1
            return original(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            await wait_until(lambda: len(executed) == n + 1)
        finally:
            del loop.call_soon_threadsafe
    assert sorted(done) == sorted(f"{app.name}:{i}" for i in range(n))
    assert calls <= 3, f"{calls} hand-offs for {n} runs"


async def test_plain_runs_each_get_a_fresh_app_context_in_their_thread(
    app: Quart, scheduler: APScheduler
) -> None:
    seen: list[tuple[int, bool, str]] = []

    def plain(i: int) -> None:
        had = hasattr(g, "mark")
        g.mark = i
        seen.append((i, had, threading.current_thread().name))

    at = _soon()
    for i in range(30):
        scheduler.add_job(f"p{i}", plain, trigger="date", run_date=at, args=[i])
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) == 30)
    assert not any(had for _, had, _ in seen)
    assert all(name.startswith("quart_sched-default") for _, _, name in seen)


async def test_plain_runs_are_recorded_and_failures_reported(tmp_path: Path) -> None:
    app = Quart("dispatch_history")
    app.config.update(SCHEDULER_HISTORY=str(tmp_path / "h.sqlite"), SCHEDULER_SHUTDOWN_TIMEOUT=2)
    ext = APScheduler(app=app)
    failed: list[JobExecutionEvent] = []
    ok: list[str] = []

    def boom() -> None:
        raise ValueError("no")

    def fine() -> None:
        ok.append("yes")

    ext.add_job("boom", boom, trigger="date", run_date=_soon(0.2))
    ext.add_job("fine", fine, trigger="date", run_date=_soon(0.2))
    ext.scheduler.add_listener(lambda e: failed.append(e), EVENT_JOB_ERROR)
    ext.start()
    try:
        async with app.test_app():
            await wait_until(lambda: failed and ok)
            history = ext.history
            assert history is not None
            rows: dict[str, dict[str, Any]] = {}

            async def recorded() -> bool:
                try:
                    page = await history.runs()
                except HistoryUnavailableError:
                    return False
                rows.update({run["job_id"]: run for run in page.runs})
                return {r["outcome"] for r in rows.values()} == {"error", "success"}

            deadline = time.monotonic() + 5
            while not await recorded() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        if ext.running:
            ext.shutdown(wait=False)
    assert isinstance(failed[0].exception, ValueError)
    assert "raise ValueError" in failed[0].traceback
    assert rows["boom"]["outcome"] == "error"
    assert rows["boom"]["error_type"] == "ValueError"
    assert rows["fine"]["outcome"] == "success"
    assert rows["fine"]["duration"] is not None


async def test_a_large_due_batch_is_submitted_in_slices(
    app: Quart, scheduler: APScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other work on the loop runs between the slices of a large batch of due jobs."""
    monkeypatch.setattr(wakeup, "SUBMIT_SLICE", 10)
    n = wakeup.CLAIM_SLICE  # one claim: the slices are the submission's own
    ticks = 0
    started: list[int] = []

    async def job() -> None:
        started.append(ticks)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    at = _soon()
    for i in range(n):
        scheduler.add_job(f"j{i:04}", job, trigger="date", run_date=at)
    scheduler.start()
    async with app.test_app():
        tick = asyncio.get_running_loop().create_task(ticker())
        try:
            await wait_until(lambda: len(started) == n)
        finally:
            tick.cancel()
    # The slices start in different loop iterations, with the ticker run in between.
    assert len(set(started)) >= 5


async def test_a_coroutine_run_is_its_own_task_with_a_fresh_app_context(
    app: Quart, scheduler: APScheduler
) -> None:
    """No wrapping coroutine: the job's coroutine is the task (a done callback reports)."""
    seen: list[tuple[bool, bool, str]] = []

    async def job() -> None:
        task = asyncio.current_task()
        assert task is not None
        own = task.get_coro().cr_code is job.__code__  # type: ignore[union-attr]
        seen.append((own, hasattr(g, "mark"), current_app.name))
        g.mark = True

    at = _soon()
    for i in range(5):
        scheduler.add_job(f"c{i}", job, trigger="date", run_date=at)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) == 5)
    assert seen == [(True, False, app.name)] * 5


async def test_the_history_writes_after_a_burst_not_during_it(tmp_path: Path) -> None:
    """The writer holds the GIL for much of a write: it waits for a burst of runs to end
    (bounded), then writes them all."""
    path = tmp_path / "burst.sqlite"
    history = RunHistory(str(path), host="test", flush_interval=0.05)
    history.start()

    def written() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])
            except sqlite3.OperationalError:  # not created yet
                return 0

    try:
        await asyncio.sleep(0.2)  # the file is opened
        at = datetime.now(timezone.utc)
        recorded = 0
        # Records at ~10,000/s for half of the longest the writer puts a write off.
        end = time.monotonic() + history.flush_interval * history_module.BURST_WAIT / 2
        while time.monotonic() < end:
            for _ in range(20):
                history.finished(history.started("j", at), "success")
                recorded += 1
            await asyncio.sleep(0.002)
        during = written()
        await wait_until(lambda: written() == recorded, timeout=5)
    finally:
        await history.aclose()
    # Without the wait, nearly all are written during the burst (one write every 50 ms);
    # with it none are, unless the machine stalls this loop for longer than a probe.
    assert during < recorded // 2, (during, recorded)


async def test_a_stop_between_slices_ends_the_dispatch_quietly(
    app: Quart, scheduler: APScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quart_sched")
    n = wakeup.SUBMIT_SLICE * 3
    started: list[int] = []

    async def job(i: int) -> None:
        started.append(i)
        if len(started) == 1:
            scheduler.shutdown(wait=False)

    at = _soon()
    for i in range(n):
        scheduler.add_job(f"j{i:04}", job, trigger="date", run_date=at, args=[i])
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: not scheduler.running and started)
        await asyncio.sleep(0.1)
    assert len(started) <= wakeup.SUBMIT_SLICE
    assert not [r for r in caplog.records if "Submitting job" in r.getMessage()]
    assert any("not started" in r.getMessage() for r in caplog.records)
