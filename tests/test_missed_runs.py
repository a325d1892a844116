"""A job that fell far behind (an outage, a tiny interval) costs the scheduler a bounded
amount of work and memory: it never builds the list of every fire it missed."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from quart import Quart

from quart_sched import APScheduler
from quart_sched._scheduler.wakeup import MAX_DUE_RUN_TIMES, due_fires

from support import wait_until

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def noop() -> None:
    pass


def make_job(trigger: Any, next_run_time: datetime, **options: Any) -> Job:
    options = {"coalesce": False, "misfire_grace_time": 1, **options}
    return Job(
        AsyncIOScheduler(timezone=timezone.utc),  # never started: the job reads its zone
        id="late",
        func=noop,
        args=(),
        kwargs={},
        name="late",
        trigger=trigger,
        executor="default",
        max_instances=1,
        next_run_time=next_run_time,
        **options,
    )


def millisecond_job(behind: timedelta, **options: Any) -> Job:
    trigger = IntervalTrigger(seconds=0.001, start_date=NOW - behind, timezone=timezone.utc)
    return make_job(trigger, NOW - behind, **options)


def test_a_job_a_little_behind_gets_every_run_it_owes() -> None:
    trigger = IntervalTrigger(seconds=10, start_date=NOW - timedelta(seconds=50))
    job = make_job(trigger, NOW - timedelta(seconds=50))
    assert due_fires(job, NOW)[0] == job._get_run_times(NOW)
    assert len(due_fires(job, NOW)[0]) == 6


@pytest.mark.parametrize("grace", [1, None])
def test_a_job_far_behind_gets_a_bounded_list_of_the_latest_runs(grace: int | None) -> None:
    job = millisecond_job(timedelta(minutes=10), misfire_grace_time=grace)  # 600,000 fires
    started = time.perf_counter()
    run_times = due_fires(job, NOW)[0]
    assert time.perf_counter() - started < 1.0
    assert 0 < len(run_times) <= MAX_DUE_RUN_TIMES
    assert run_times == sorted(run_times)
    assert run_times[-1] == NOW  # up to now: the next pass goes on from there
    assert job.trigger.get_next_fire_time(run_times[-1], NOW) > NOW
    assert run_times[0] >= NOW - timedelta(seconds=1)


def test_a_coalescing_job_far_behind_gets_its_latest_run_only() -> None:
    job = millisecond_job(timedelta(days=1), coalesce=True)  # 86 million fires
    assert due_fires(job, NOW)[0] == [NOW]


def test_a_cron_job_a_year_behind_is_bounded() -> None:
    trigger = CronTrigger(second="*", timezone=timezone.utc)
    job = make_job(trigger, NOW - timedelta(days=365))
    run_times = due_fires(job, NOW)[0]
    assert 0 < len(run_times) <= MAX_DUE_RUN_TIMES
    assert run_times[-1] == NOW


async def test_the_scheduler_stays_responsive_with_a_job_far_behind(app: Quart) -> None:
    runs: list[datetime] = []

    async def tick() -> None:
        runs.append(datetime.now(timezone.utc))

    app.config["SCHEDULER_HISTORY"] = False
    ext = APScheduler(app=app)
    ext.start()
    async with app.test_app():
        lag = 0.0
        stop = asyncio.Event()

        async def measure() -> None:
            nonlocal lag
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - before - 0.005)

        probe = asyncio.create_task(measure())
        await asyncio.sleep(0.05)
        now = datetime.now(timezone.utc)
        ext.add_job(
            "late",
            tick,
            trigger="interval",
            seconds=0.001,
            start_date=now - timedelta(minutes=10),
            next_run_time=now - timedelta(minutes=10),  # 600,000 fires behind
            coalesce=True,
        )
        await wait_until(lambda: len(runs) >= 3)
        ext.remove_job("late")
        stop.set()
        await probe
        assert runs[0] >= now - timedelta(seconds=1)  # the latest run, not a stale one
        assert lag < 0.5, f"the loop stalled for {lag:.3f} s"
