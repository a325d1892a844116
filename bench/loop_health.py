"""Scenario 3: event-loop lag while plain-function jobs block for 50 ms, 100 times a second.

100 interval jobs at 1 s, due 10 ms apart, each sleeping (``time.sleep``) or burning CPU
in pure Python for 50 ms of wall time. A probe coroutine on the same loop sleeps 1 ms
over and over and records how late it wakes up (the loop's lag).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from bench import jobs
from bench._util import (
    NONE,
    QS,
    QT,
    RAW,
    Column,
    Ratio,
    Scenario,
    Target,
    fresh_instance_path,
    interleaved,
    percentile,
    quart_sched_config,
    run_child,
)

KINDS = ("sleep", "cpu")
IMPLS = (NONE, RAW, QS, QT)
JOBS = 100
PERIOD = 1.0
BLOCK = 0.05


def run(quick: bool, rounds: int | None) -> Scenario:
    duration = 0.5 if quick else 10.0
    rounds = rounds or (1 if quick else 3)
    scenario = Scenario(
        name="loop_health",
        title=f"3. Loop health: {JOBS} plain jobs/s, each blocking {BLOCK * 1000:.0f} ms",
        params={
            "jobs_per_s": JOBS,
            "block_ms": BLOCK * 1000,
            "seconds": duration,
            "rounds": rounds,
        },
        columns=[
            Column("lag_p50_ms", "loop lag p50 ms", "{:.2f}"),
            Column("lag_p99_ms", "loop lag p99 ms", "{:.2f}"),
            Column("lag_max_ms", "loop lag max ms", "{:.1f}"),
            Column("runs_per_s", "runs/s", "{:.1f}"),
        ],
        ratios=[Ratio("lag p99 ÷ quart_sched", "lag_p99_ms", QS, row_over_ref=True)],
    )

    def measure(_index: int, variant: tuple[str, str]) -> None:
        kind, impl = variant
        params = {"impl": impl, "kind": kind, "seconds": duration, "quick": quick}
        scenario.row(impl, kind).rounds.append(
            run_child("loop_health", "measure", params, timeout=duration + 60)
        )

    interleaved(rounds, [(kind, impl) for kind in KINDS for impl in IMPLS], measure)
    for kind in KINDS:
        scenario.targets.append(
            Target(
                f"quart_sched loop lag p99 ({kind})",
                scenario.value(QS, kind, "lag_p99_ms"),
                5,
                False,
                " ms",
            )
        )
    scenario.notes += [
        "cpu: a pure-Python loop spinning for 50 ms of wall time, so it holds the GIL",
        "thread pools: quart_sched 10 threads (its default); raw APScheduler and "
        "quart-tasks the loop's default pool (min(32, cores + 4) threads)",
        "the no-scheduler row is the probe alone: the floor of this measurement",
    ]
    return scenario


# ---------------------------------------------------------------------- in the child


def measure(params: dict[str, Any]) -> dict[str, float]:
    return asyncio.run(
        _measure(
            params["impl"],
            params["kind"],
            params["seconds"],
            params["quick"],
            params.get("executors"),
        )
    )


async def _measure(
    impl: str, kind: str, seconds: float, quick: bool, executors: dict[str, Any] | None = None
) -> dict[str, float]:
    func = jobs.block_sleep if kind == "sleep" else jobs.block_cpu
    base = time.time() + (0.2 if quick else 0.5)
    anchors = [base + i * PERIOD / JOBS for i in range(JOBS)]
    start = [datetime.fromtimestamp(a, timezone.utc) for a in anchors]
    # After the first round of runs: every job has run once and the pool is warm.
    warmup = 0.3 if quick else PERIOD
    # Set when measuring starts: an app that took long to start (a loaded machine) moves
    # the window later instead of leaving it behind, with no sample in it.
    window = [base + warmup, base + warmup + seconds]
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            started = time.time()
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - before - 0.001
            # A probe overlapping the window counts: a stall as long as the whole window
            # (a loaded machine) is a sample, not an empty result.
            if started < window[1] and time.time() >= window[0]:
                lags.append(lag)

    async def measured() -> int:
        late = time.time() - base
        if late > 0:
            window[:] = [window[0] + late, window[1] + late]
        task = asyncio.create_task(probe())
        await asyncio.sleep(window[0] - time.time())
        runs_before = next(jobs.LOOP_RUNS)
        await asyncio.sleep(window[1] - time.time())
        runs = next(jobs.LOOP_RUNS) - runs_before - 1
        stop.set()
        await task
        return runs

    if impl == NONE:
        runs = await measured()
    elif impl == RAW:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        raw = AsyncIOScheduler(timezone=timezone.utc)
        for i, when in enumerate(start):
            raw.add_job(
                func, "interval", seconds=PERIOD, start_date=when, args=(BLOCK,), id=f"j{i}"
            )
        raw.start()
        runs = await measured()
        raw.shutdown(wait=False)
    elif impl == QS:
        from quart import Quart

        from quart_sched import APScheduler

        app = Quart(__name__, instance_path=fresh_instance_path())
        app.config.update(quart_sched_config())
        if executors:  # a diagnostic (python -m bench --profile loop-gil)
            app.config["SCHEDULER_EXECUTORS"] = executors
        scheduler = APScheduler(app=app)
        for i, when in enumerate(start):
            scheduler.add_job(
                f"j{i}", func, trigger="interval", seconds=PERIOD, start_date=when, args=(BLOCK,)
            )
        async with app.test_app():
            scheduler.start()
            runs = await measured()
    elif impl == QT:
        from quart import Quart
        from quart_tasks import QuartTasks
        from quart_tasks.store import MemoryStore

        first_due = {f"t{i}": when for i, when in enumerate(start)}

        class FirstDue(MemoryStore):
            async def get(self, key: str, default: datetime) -> datetime:
                return await super().get(key, first_due[key] - timedelta(seconds=PERIOD))

        app = Quart(__name__, instance_path=fresh_instance_path())
        tasks = QuartTasks(app, store=FirstDue(), tzinfo=timezone.utc)
        for name in first_due:
            tasks.add_periodic_task(partial(func, BLOCK), timedelta(seconds=PERIOD), name=name)
        async with app.test_app():
            runs = await measured()
    else:
        raise ValueError(impl)
    return {
        "lag_p50_ms": percentile(lags, 50) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "lag_max_ms": max(lags) * 1000,
        "runs_per_s": runs / seconds,
        "probes": float(len(lags)),
    }
