"""A wake-up pass writes the due jobs of an in-memory store back at once (DueWrites): the
store keeps its order and finds every job afterwards, whether the batch was most of the
store (one sort) or a few jobs of many (each put back in its place)."""

from __future__ import annotations

import collections
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from quart import Quart

from quart_sched import APScheduler
from quart_sched._scheduler import wakeup
from quart_sched._stores import DueWrites, bind_to_thread

import jobfuncs
from support import wait_until

EXECUTED = 1 << 12


def _order_is_kept(scheduler: APScheduler) -> None:
    """The store lists its jobs by (next run time, id), and finds each one by id."""
    jobs = scheduler.get_jobs()
    keys = [(job.next_run_time, job.id) for job in jobs]
    assert keys == sorted(keys)
    for job in jobs:
        found = scheduler.get_job(job.id)
        assert found is not None and found.next_run_time == job.next_run_time


@pytest.mark.parametrize(("due_interval", "due_once", "later"), [(60, 40, 5), (3, 2, 400)])
async def test_due_jobs_go_back_in_order_and_run_again(
    app: Quart, due_interval: int, due_once: int, later: int
) -> None:
    app.config.update(SCHEDULER_COORDINATION=False, SCHEDULER_HISTORY=False)
    scheduler = APScheduler(app=app)
    runs: collections.Counter[str] = collections.Counter()
    scheduler.add_listener(lambda event: runs.update([event.job_id]), EXECUTED)
    now = datetime.now(timezone.utc)
    due = now + timedelta(seconds=0.5)
    name = f"due-writes-{due_interval}-{later}"
    for number in range(due_interval):  # every 1 s from `due`: each runs again
        scheduler.add_job(
            f"every-{number:03}",
            jobfuncs.tick,
            trigger="interval",
            seconds=1,
            start_date=due,
            args=[name],
        )
    for number in range(due_once):  # once, at `due`: removed after it
        scheduler.add_job(
            f"once-{number:03}", jobfuncs.tick, trigger="date", run_date=due, args=[name]
        )
    for number in range(later):  # far away, spread: the due ones go back among them
        scheduler.add_job(
            f"later-{number:03}",
            jobfuncs.tick,
            trigger="date",
            run_date=now + timedelta(hours=1, seconds=number * 7 % 13),
            args=[name],
        )
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(runs) == due_interval + due_once, timeout=10)
        _order_is_kept(scheduler)
        ids = {job.id for job in scheduler.get_jobs()}
        assert not any(job_id.startswith("once-") for job_id in ids)
        assert all(scheduler.get_job(f"once-{n:03}") is None for n in range(due_once))
        assert len(ids) == due_interval + later
        # The interval jobs are found due again at their next run time.
        await wait_until(
            lambda: all(runs[f"every-{n:03}"] >= 2 for n in range(due_interval)), timeout=10
        )
        _order_is_kept(scheduler)
    assert all(runs[f"once-{n:03}"] == 1 for n in range(due_once))
    assert not any(job_id.startswith("later-") for job_id in runs)


async def test_a_job_removed_by_its_own_run_leaves_the_store_consistent(app: Quart) -> None:
    app.config.update(SCHEDULER_COORDINATION=False, SCHEDULER_HISTORY=False)
    scheduler = APScheduler(app=app)
    removed: list[str] = []

    async def remove_self(job_id: str) -> None:
        scheduler.remove_job(job_id)
        removed.append(job_id)

    due = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    for number in range(30):
        job_id = f"self-{number:02}"
        scheduler.add_job(
            job_id, remove_self, trigger="interval", seconds=1, start_date=due, args=[job_id]
        )
    scheduler.add_job("stays", jobfuncs.tick, trigger="interval", hours=1, args=["stays"])
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(removed) == 30, timeout=10)
        assert [job.id for job in scheduler.get_jobs()] == ["stays"]
        _order_is_kept(scheduler)


async def test_a_large_due_batch_starts_running_before_all_of_it_is_taken(app: Quart) -> None:
    """An in-memory store's due batch is taken a slice at a time (TAKE_SLICE), each slice
    dispatched before the next is taken: the first runs start while most of the batch
    is still in the store, and the loop serves other work in between."""
    app.config.update(SCHEDULER_COORDINATION=False, SCHEDULER_HISTORY=False)
    scheduler = APScheduler(app=app)
    left_in_store: list[int] = []

    async def count_left() -> None:
        left_in_store.append(len(scheduler.get_jobs()))

    n = wakeup.TAKE_SLICE * 4
    due = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    for number in range(n):
        scheduler.add_job(f"batch-{number:04}", count_left, trigger="date", run_date=due)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(left_in_store) == n, timeout=10)
    # The first runs saw the other slices still waiting in the store; the last saw none.
    assert left_in_store[0] >= n - wakeup.TAKE_SLICE
    assert left_in_store[-1] == 0


@pytest.mark.parametrize("schedule_ends", [False, True])
def test_a_pass_never_undoes_a_pause_written_by_another_process(
    tmp_path: Path, schedule_ends: bool
) -> None:
    """The pass reads its due jobs, then writes their next run times: a pause another
    process committed in between (the CLI, a standby) must survive, and the fire it
    paused must not run. On a SQLAlchemy store the write is conditional on the row."""
    from apscheduler.jobstores.base import JobLookupError
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    other = BackgroundScheduler(timezone=timezone.utc)
    other.add_jobstore(SQLAlchemyJobStore(url=url))
    due = datetime.now(timezone.utc) - timedelta(seconds=1)
    trigger = (
        {"trigger": "date", "run_date": due}
        if schedule_ends
        else {"trigger": "interval", "seconds": 60, "next_run_time": due}
    )
    other.add_job(jobfuncs.tick_sync, args=("j",), id="j", **trigger)
    other.start(paused=True)

    store = bind_to_thread(SQLAlchemyJobStore(url=url), "default")
    store.start(other, "default")
    [job] = store.get_due_jobs(datetime.now(timezone.utc))  # the pass reads it...
    other.pause_job("j")  # ...another process pauses it...
    writes = DueWrites(store, 1)
    with pytest.raises(JobLookupError):  # ...and the pass's write does not undo that
        if schedule_ends:
            writes.remove(job.id, job.next_run_time)
        else:
            was = job.next_run_time
            job._modify(next_run_time=was + timedelta(seconds=60))
            writes.update(job, was)
    assert other.get_job("j").next_run_time is None
    store.shutdown()
    other.shutdown()
