"""Scenario 5: a SQLite job store (SQLAlchemyJobStore) with 10,000 jobs, and memory.

Store operations, in one fresh process per implementation and round, on a new SQLite
file: add N interval jobs to a running scheduler, modify each (new args), restart over
the full store, restart re-declaring all N jobs (``replace_existing``, as jobs from
config are on every start), then remove each. A scheduler wakes up after every change;
those wake-ups are counted in the phase that caused them.

Memory: RSS of a fresh process before and after adding N jobs to a running scheduler's
in-memory store.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
import tracemalloc
from typing import Any

from bench import jobs
from bench._util import (
    FAS,
    QS,
    RAW,
    Column,
    Ratio,
    Scenario,
    fresh_instance_path,
    interleaved,
    quart_sched_config,
    rss_bytes,
    run_child,
)

STORE = "SQLite store"
MEMORY = "memory store"
FUNC = "bench.jobs:noop"


def run(quick: bool, rounds: int | None) -> Scenario:
    n = 200 if quick else 10_000
    rounds = rounds or (1 if quick else 3)
    scenario = Scenario(
        name="persistence",
        title=f"5. Persistence: {n:,} jobs in SQLite (SQLAlchemyJobStore), and in memory",
        params={"jobs": n, "rounds": rounds},
        group_header="store",
        columns=[
            Column("add_per_s", "add/s", "{:,.0f}"),
            Column("modify_per_s", "modify/s", "{:,.0f}"),
            Column("remove_per_s", "remove/s", "{:,.0f}"),
            Column("start_ms", "start ms", "{:,.1f}"),
            Column("redeclare_s", "start re-declaring all s", "{:,.2f}"),
            Column("get_jobs_s", "get_jobs() s", "{:.2f}"),
            Column("rss_mib", f"RSS MiB per {n:,} jobs", "{:.1f}"),
            Column("heap_mib", f"heap MiB per {n:,} jobs", "{:.1f}"),
        ],
        ratios=[Ratio("quart_sched ÷ row, add/s", "add_per_s", QS)],
    )
    for impl in (RAW, QS):
        scenario.row(impl, STORE)
    for impl in (RAW, QS, FAS):
        scenario.row(impl, MEMORY)

    def measure(_index: int, variant: tuple[str, str]) -> None:
        group, impl = variant
        row = scenario.row(impl, group)
        if group == STORE:
            row.rounds.append(run_child("persistence", "store_ops", {"impl": impl, "n": n}, 900))
            return
        rss = run_child("persistence", "memory", {"impl": impl, "n": n}, 120)
        heap = run_child("persistence", "memory", {"impl": impl, "n": n, "tracemalloc": 1}, 120)
        row.rounds.append({**rss, **heap})

    variants = [(STORE, RAW), (STORE, QS), (MEMORY, RAW), (MEMORY, QS), (MEMORY, FAS)]
    interleaved(rounds, variants, measure)
    scenario.notes += [
        "start: start() on a store already holding every job, until the first wake-up "
        "has run; re-declaring: declaring all jobs again (replace_existing=True; for "
        "quart_sched through SCHEDULER_JOBS) and starting",
        "get_jobs(): loading (unpickling) every job from the store",
        "every store write is its own transaction (SQLAlchemyJobStore's behaviour)",
        "RSS: growth of the process's resident memory (includes freed memory Python "
        "keeps); heap: growth of live Python allocations (tracemalloc, a separate run)",
    ]
    return scenario


# ---------------------------------------------------------------------- in the child


def _job_kwargs(i: int) -> dict[str, Any]:
    return {"trigger": "interval", "hours": 1, "args": [i], "misfire_grace_time": None}


def store_ops(params: dict[str, Any]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        url = f"sqlite:///{os.path.join(tmp, 'jobs.sqlite')}"
        return asyncio.run(_store_ops(params["impl"], params["n"], url))


async def _settle() -> None:
    """Let the wake-ups queued by the last changes run (they are call_soon callbacks)."""
    for _ in range(2):
        await asyncio.sleep(0)


async def _store_ops(impl: str, n: int, url: str) -> dict[str, float]:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    if impl == RAW:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        def new() -> Any:
            sched = AsyncIOScheduler(
                timezone="UTC", jobstores={"default": SQLAlchemyJobStore(url=url)}
            )
            return sched, sched

        def declare(api: Any, sched: Any) -> None:
            for i in range(n):
                api.add_job(FUNC, id=f"j{i}", replace_existing=True, **_job_kwargs(i))

        def add(api: Any, i: int) -> None:
            api.add_job(FUNC, id=f"j{i}", **_job_kwargs(i))

    elif impl == QS:
        from quart import Quart

        from quart_sched import APScheduler

        def make(jobs_config: list[dict[str, Any]] | None = None) -> Any:
            app = Quart(__name__, instance_path=fresh_instance_path())
            app.config.update(quart_sched_config())
            app.config.update(
                SCHEDULER_TIMEZONE="UTC",
                SCHEDULER_JOBSTORES={"default": {"type": "sqlalchemy", "url": url}},
                SCHEDULER_JOBS=jobs_config or [],
            )
            ext = APScheduler(app=app)
            return ext, ext.scheduler

        def new() -> Any:
            return make()

        def declare(api: Any, sched: Any) -> None:
            raise AssertionError("quart_sched re-declares through SCHEDULER_JOBS")

        def add(api: Any, i: int) -> None:
            api.add_job(f"j{i}", FUNC, **_job_kwargs(i))

    else:
        raise ValueError(impl)

    result: dict[str, float] = {}
    api, sched = new()
    sched.start()
    await _settle()

    begin = time.perf_counter()
    for i in range(n):
        add(api, i)
    await _settle()
    result["add_per_s"] = n / (time.perf_counter() - begin)

    begin = time.perf_counter()
    for i in range(n):
        api.modify_job(f"j{i}", args=[i + 1])
    await _settle()
    result["modify_per_s"] = n / (time.perf_counter() - begin)
    sched.shutdown()
    await _settle()

    # Start over a store holding every job.
    api, sched = new()
    begin = time.perf_counter()
    sched.start()
    await _settle()
    result["start_ms"] = (time.perf_counter() - begin) * 1000
    begin = time.perf_counter()
    count = len(api.get_jobs())
    result["get_jobs_s"] = time.perf_counter() - begin
    assert count == n, (count, n)
    sched.shutdown()
    await _settle()

    # Start re-declaring every job, as an app with its jobs in config does.
    begin = time.perf_counter()
    if impl == QS:
        specs = [{"id": f"j{i}", "func": FUNC, **_job_kwargs(i)} for i in range(n)]
        api, sched = make(specs)
    else:
        api, sched = new()
        declare(api, sched)
    sched.start()
    await _settle()
    result["redeclare_s"] = time.perf_counter() - begin
    assert len(api.get_jobs()) == n

    begin = time.perf_counter()
    for i in range(n):
        api.remove_job(f"j{i}")
    await _settle()
    result["remove_per_s"] = n / (time.perf_counter() - begin)
    sched.shutdown()
    await _settle()
    return result


def memory(params: dict[str, Any]) -> dict[str, float]:
    impl, n = params["impl"], params["n"]
    if params.get("tracemalloc"):
        tracemalloc.start()
    if impl == FAS:
        from flask import Flask
        from flask_apscheduler import APScheduler as FlaskAPScheduler

        scheduler = FlaskAPScheduler(app=Flask(__name__))
        scheduler.start()
        grown = _grow(lambda i: scheduler.add_job(f"j{i}", jobs.noop, **_job_kwargs(i)), n)
        scheduler.shutdown()
        return grown

    async def on_loop() -> dict[str, float]:
        if impl == RAW:
            from apscheduler.schedulers.asyncio import AsyncIOScheduler

            raw = AsyncIOScheduler(timezone="UTC")
            raw.start()
            grown = await _grow_async(
                lambda i: raw.add_job(jobs.noop, id=f"j{i}", **_job_kwargs(i)), n
            )
            raw.shutdown()
            return grown
        from quart import Quart

        from quart_sched import APScheduler

        app = Quart(__name__, instance_path=fresh_instance_path())
        app.config.update(quart_sched_config(), SCHEDULER_TIMEZONE="UTC")
        ext = APScheduler(app=app)
        ext.start()
        grown = await _grow_async(lambda i: ext.add_job(f"j{i}", jobs.noop, **_job_kwargs(i)), n)
        ext.shutdown()
        return grown

    return asyncio.run(on_loop())


def _grow(add: Any, n: int) -> dict[str, float]:
    before = _measure_memory()
    for i in range(n):
        add(i)
    time.sleep(0.2)  # the scheduler thread's wake-up
    return _memory_growth(before)


async def _grow_async(add: Any, n: int) -> dict[str, float]:
    await _settle()
    before = _measure_memory()
    for i in range(n):
        add(i)
    await _settle()  # run the wake-ups each add queued
    return _memory_growth(before)


def _measure_memory() -> tuple[int, int]:
    gc.collect()
    return rss_bytes(), tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


def _memory_growth(before: tuple[int, int]) -> dict[str, float]:
    """RSS growth (what the OS sees, including freed memory Python keeps) or, in the
    tracemalloc pass, the growth of live Python allocations (what the jobs hold)."""
    rss, heap = _measure_memory()
    if tracemalloc.is_tracing():
        return {"heap_mib": (heap - before[1]) / 2**20}
    return {"rss_mib": (rss - before[0]) / 2**20}
