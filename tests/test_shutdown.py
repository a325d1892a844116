"""When serving stops, running jobs finish; past SCHEDULER_SHUTDOWN_TIMEOUT they are
cancelled and reported as interrupted, never as errors."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from quart import Quart

from quart_sched import STATE_STOPPED, APScheduler
from quart_sched.signals import job_failed, job_interrupted

from support import wait_until


async def test_running_coroutine_job_finishes_when_serving_stops(
    app: Quart, scheduler: APScheduler
) -> None:
    events: list[int] = []
    steps: list[str] = []

    async def slow() -> None:
        steps.append("started")
        await asyncio.sleep(0.3)
        steps.append("finished")

    scheduler.add_listener(lambda e: events.append(e.code), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.add_job("slow", slow, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: steps)
    # after_serving has returned: the job was awaited, not cancelled
    assert steps == ["started", "finished"]
    assert events == [EVENT_JOB_EXECUTED]
    assert scheduler.state == STATE_STOPPED


async def test_running_thread_job_finishes_when_serving_stops(
    app: Quart, scheduler: APScheduler
) -> None:
    steps: list[str] = []
    started = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        steps.append("finished")

    scheduler.add_job("slow", slow, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(started.is_set)
    assert steps == ["finished"]


async def test_no_new_runs_start_once_serving_stops(app: Quart, scheduler: APScheduler) -> None:
    runs: list[float] = []

    async def tick() -> None:
        runs.append(time.monotonic())
        await asyncio.sleep(0.2)

    scheduler.add_job("tick", tick, trigger="interval", seconds=0.02, max_instances=10)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: runs)
    count = len(runs)
    await asyncio.sleep(0.1)
    assert len(runs) == count


async def test_job_past_the_timeout_is_cancelled_and_reported_interrupted(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 0.2
    scheduler = APScheduler(app=app)
    interrupted: list[str] = []
    failed: list[str] = []
    events: list[int] = []
    steps: list[str] = []

    async def forever() -> None:
        steps.append("started")
        await asyncio.sleep(60)
        steps.append("finished")

    def on_interrupted(sender: Quart, job_id: str, **kw: Any) -> None:
        interrupted.append(job_id)

    def on_failed(sender: Quart, job_id: str, **kw: Any) -> None:
        failed.append(job_id)

    scheduler.add_listener(lambda e: events.append(e.code), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.add_job("forever", forever, trigger="date")
    with (
        job_interrupted.connected_to(on_interrupted),
        job_failed.connected_to(on_failed),
        caplog.at_level(logging.INFO),
    ):
        scheduler.start()
        started = time.monotonic()
        async with app.test_app():
            await wait_until(lambda: steps)
        elapsed = time.monotonic() - started
    assert steps == ["started"]
    assert interrupted == ["forever"]
    assert failed == []
    assert events == []  # never reported as a plain error
    assert elapsed < 5
    warnings = [r for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(warnings) == 1 and "'forever'" in warnings[0].getMessage()
    assert warnings[0].name == "quart_sched" and warnings[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_job_stores_close_after_running_jobs_finish(
    app: Quart, scheduler: APScheduler
) -> None:
    from apscheduler.jobstores.memory import MemoryJobStore

    order: list[str] = []

    class ClosingStore(MemoryJobStore):  # type: ignore[misc]
        def shutdown(self) -> None:
            order.append("store closed")

    scheduler.scheduler.add_jobstore(ClosingStore(), "closing")

    async def slow() -> None:
        await asyncio.sleep(0.2)
        order.append("job finished")

    scheduler.add_job("slow", slow, trigger="date")
    scheduler.start()
    async with app.test_app():
        await asyncio.sleep(0.05)
    assert order == ["job finished", "store closed"]


async def test_shutdown_without_wait_does_not_cancel_running_jobs(
    app: Quart, scheduler: APScheduler
) -> None:
    steps: list[str] = []

    async def slow() -> None:
        steps.append("started")
        await asyncio.sleep(0.1)
        steps.append("finished")

    scheduler.add_job("slow", slow, trigger="date")
    scheduler.start()
    await wait_until(lambda: steps)
    scheduler.shutdown(wait=False)
    assert scheduler.state == STATE_STOPPED
    await wait_until(lambda: steps == ["started", "finished"])
    # Once its runs have ended (and are recorded), it lets go of the run history.
    history = scheduler.history
    assert history is not None
    await wait_until(lambda: not history.held_by("scheduler"))
    await scheduler.scheduler.aclose()
