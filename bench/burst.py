"""Scenario 1: a burst of N one-off jobs all due at the same instant.

Every implementation gets the same N jobs with a date trigger at T0 = now + offset
(``misfire_grace_time=None``), declared before the scheduler starts. Each job records
``time.time()`` as its first statement. Figures: jobs per second from T0 until the last
job started, and start lateness (start - T0) p50/p99.
"""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from bench import jobs
from bench._util import (
    FAS,
    QS,
    QS_CORE,
    QS_HISTORY,
    QT,
    RAW,
    Column,
    NotAvailable,
    Ratio,
    Scenario,
    fresh_instance_path,
    interleaved,
    percentile,
    quart_sched_config,
    run_child,
)

KINDS = ("coroutine", "plain")
IMPLS = (RAW, QS_CORE, QS, QS_HISTORY, FAS, QT)

#: A quart-tasks task's period: long enough that each task runs once in the measurement.
_QT_PERIOD = timedelta(hours=1)


def run(quick: bool, rounds: int | None) -> Scenario:
    n = 500 if quick else 5000
    rounds = rounds or (1 if quick else 5)
    scenario = Scenario(
        name="burst",
        title=f"1. Burst dispatch: {n:,} jobs due at the same instant",
        params={"jobs": n, "rounds": rounds},
        columns=[
            Column("throughput", "jobs/s", "{:,.0f}"),
            Column("p50_ms", "p50 lateness ms", "{:.1f}"),
            Column("p99_ms", "p99 lateness ms", "{:.1f}"),
            Column("cpu_us", "CPU µs/job", "{:.0f}"),
            Column("loop_cpu_us", "loop CPU µs/job", "{:.0f}"),
            Column("gc_ms", "GC pauses ms", "{:.0f}"),
            Column("setup_s", "add + start s", "{:.2f}"),
        ],
        ratios=[Ratio("quart_sched default ÷ row, jobs/s", "throughput", QS_HISTORY)],
    )
    for kind in KINDS:
        for impl in IMPLS:
            scenario.row(impl, kind)  # table order

    def measure(_index: int, variant: tuple[str, str]) -> None:
        kind, impl = variant
        row = scenario.row(impl, kind)
        if row.unavailable is not None:
            return
        params = {"impl": impl, "kind": kind, "n": n, "offset": 0.3 if quick else 2.0}
        try:
            result = run_child("burst", "measure", params, timeout=180)
        except NotAvailable as exc:
            row.unavailable = str(exc)
            return
        row.rounds.append(result)

    interleaved(rounds, [(kind, impl) for kind in KINDS for impl in IMPLS], measure)

    # The targets judge the default configuration (app context and run history on).
    for kind in KINDS:
        scenario.ratio_target(
            f"quart_sched default (history on) ≥ 1.0x raw APScheduler jobs/s ({kind})",
            QS_HISTORY,
            RAW,
            kind,
            "throughput",
            1.0,
        )
    scenario.ratio_target(
        "quart_sched default (history on) ≥ 1.5x Flask-APScheduler jobs/s (plain)",
        QS_HISTORY,
        FAS,
        "plain",
        "throughput",
        1.5,
    )
    for kind in KINDS:
        scenario.ratio_target(
            f"run history costs ≤ 5% of jobs/s: history on ÷ off ≥ 0.95x ({kind})",
            QS_HISTORY,
            QS,
            kind,
            "throughput",
            0.95,
        )
    scenario.notes += [
        "coroutine jobs run on the loop; plain functions in a thread pool: raw APScheduler "
        "and quart-tasks use the loop's default pool (min(32, cores + 4) threads), "
        "quart_sched and Flask-APScheduler their default 10-thread pool",
        "quart_sched pushes a fresh app context for every run; raw APScheduler and "
        "Flask-APScheduler push none; quart-tasks pushes one. The QuartScheduler-alone row "
        "is quart_sched's scheduler and executor with no app (a diagnostic: the same "
        "code path without the app context)",
        "quart-tasks has no one-off jobs: N periodic tasks (period 1 h) whose store says "
        "they last ran at T0 - 1 h, so all N are due at T0 (its TaskStoreABC is public)",
        "CPU µs/job: CPU time of the whole process (all threads) from T0 until the last "
        "job ran, per job; loop CPU: the event loop's thread alone (what bounds the rate)",
        "GC pauses: time spent in the garbage collector between T0 and the last start",
        "add + start s: declaring the N jobs and starting the scheduler (not in jobs/s)",
    ]
    return scenario


# ---------------------------------------------------------------------- in the child


def measure(params: dict[str, Any]) -> dict[str, float]:
    impl, kind, n, offset = params["impl"], params["kind"], params["n"], params["offset"]
    _import(impl)  # imports are not part of "add + start"
    if params.get("disable_gc"):  # a diagnostic (python -m bench --profile burst-gc)
        global _ready
        ready = _ready

        def _ready(begin: float, t0: datetime) -> tuple[float, float] | None:
            result = ready(begin, t0)
            gc.disable()
            return result

    if impl == FAS and kind == "coroutine":
        raise NotAvailable(
            "Flask-APScheduler's thread pool calls a coroutine function without awaiting it"
        )
    gc_pauses: list[tuple[float, float]] = []  # (wall time at start, seconds)
    gc_started = [0.0, 0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[:] = [time.time(), time.perf_counter()]
        else:
            gc_pauses.append((gc_started[0], time.perf_counter() - gc_started[1]))

    gc.callbacks.append(on_gc)
    # Retry with a later T0 if declaring the jobs took longer than the offset.
    for _attempt in range(4):
        gc_pauses.clear()
        jobs.BURST = jobs.Burst(n)
        t0 = datetime.now(timezone.utc) + timedelta(seconds=offset)
        if impl == FAS:
            started = _flask_apscheduler(kind, n, t0)
        else:
            started = asyncio.run(_on_loop(impl, kind, n, t0, params.get("config") or {}))
        if started is not None:
            break
        offset *= 4
    else:
        raise RuntimeError("could not declare the jobs before they were due")
    setup_s, ready_at = started
    t0_ts = t0.timestamp()
    gc.callbacks.remove(on_gc)
    end = max(jobs.BURST.starts)
    late = [s - t0_ts for s in jobs.BURST.starts]
    return {
        "throughput": n / (end - t0_ts),
        "cpu_us": jobs.BURST.cpu * 1e6 / n,
        "loop_cpu_us": jobs.BURST.loop_cpu * 1e6 / n,
        "gc_ms": sum(d for at, d in gc_pauses if t0_ts <= at <= end) * 1000,
        "p50_ms": percentile(late, 50) * 1000,
        "p99_ms": percentile(late, 99) * 1000,
        "setup_s": setup_s,
        "margin_s": t0_ts - ready_at,
    }


def _import(impl: str) -> None:
    import apscheduler.schedulers.asyncio  # noqa: F401

    if impl == FAS:
        import flask  # noqa: F401
        import flask_apscheduler  # noqa: F401
    else:
        import quart  # noqa: F401
    if impl in (QS, QS_CORE, QS_HISTORY):
        import quart_sched  # noqa: F401
    if impl == QT:
        import quart_tasks  # noqa: F401


def _func(kind: str) -> Any:
    return jobs.burst_coro if kind == "coroutine" else jobs.burst_plain


async def _wait_done(t0: datetime, timeout: float = 120.0) -> None:
    """Wait for the last job, measuring CPU time from T0: the process's and (this
    coroutine runs on it) the loop thread's."""
    burst = jobs.BURST
    assert burst is not None
    await asyncio.sleep(max(0.0, t0.timestamp() - time.time() - 0.005))
    cpu, loop_cpu = time.process_time(), time.thread_time()
    deadline = time.monotonic() + timeout
    # Polling (not a thread waiting on the event) keeps every pool thread for the jobs.
    while not burst.done.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError("the burst did not finish")
        await asyncio.sleep(0.02)
    burst.cpu = time.process_time() - cpu
    burst.loop_cpu = time.thread_time() - loop_cpu


async def _on_loop(
    impl: str, kind: str, n: int, t0: datetime, config: dict[str, Any]
) -> tuple[float, float] | None:
    """``config``: more app config for the quart_sched rows (the failover scenario's
    ledger rows set SCHEDULER_COORDINATION)."""
    func = _func(kind)
    begin = time.perf_counter()
    if impl == RAW:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        raw = AsyncIOScheduler(timezone=timezone.utc)
        for i in range(n):
            raw.add_job(func, "date", run_date=t0, args=(i,), id=f"j{i}", misfire_grace_time=None)
        raw.start()
        ready = _ready(begin, t0)
        if ready is not None:
            await _wait_done(t0)
        raw.shutdown(wait=False)
        return ready

    if impl == QS_CORE:
        from quart_sched import QuartScheduler

        core = QuartScheduler(timezone=timezone.utc)
        for i in range(n):
            core.add_job(func, "date", run_date=t0, args=(i,), id=f"j{i}", misfire_grace_time=None)
        core.start()
        ready = _ready(begin, t0)
        if ready is not None:
            await _wait_done(t0)
        await core.aclose()
        return ready

    from quart import Quart

    app = Quart(__name__, instance_path=fresh_instance_path())
    if impl in (QS, QS_HISTORY):
        import tempfile

        from quart_sched import APScheduler

        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            history = f"{tmp}/history.sqlite" if impl == QS_HISTORY else None
            app.config.update(quart_sched_config(history))
            app.config.update(config)
            scheduler = APScheduler(app=app)
            for i in range(n):
                scheduler.add_job(
                    f"j{i}", func, trigger="date", run_date=t0, args=(i,), misfire_grace_time=None
                )
            async with app.test_app():  # the serving lifecycle, as under Hypercorn
                scheduler.start()
                ready = _ready(begin, t0)
                if ready is not None:
                    await _wait_done(t0)
        return ready

    if impl == QT:
        from quart_tasks import QuartTasks
        from quart_tasks.store import MemoryStore

        class LastRanAt(MemoryStore):
            async def get(self, key: str, default: datetime) -> datetime:
                return await super().get(key, t0 - _QT_PERIOD)

        tasks = QuartTasks(app, store=LastRanAt(), tzinfo=timezone.utc)
        for i in range(n):
            tasks.add_periodic_task(partial(func, i), _QT_PERIOD, name=f"t{i}")
        async with app.test_app():
            await asyncio.sleep(0)  # let the task group start its tasks
            ready = _ready(begin, t0)
            if ready is not None:
                await _wait_done(t0)
        return ready
    raise ValueError(impl)


def _ready(begin: float, t0: datetime) -> tuple[float, float] | None:
    """(setup seconds, when ready), or None when the jobs were already due."""
    now = time.time()
    if now >= t0.timestamp() - 0.05:
        return None
    return time.perf_counter() - begin, now


def _flask_apscheduler(kind: str, n: int, t0: datetime) -> tuple[float, float] | None:
    from flask import Flask
    from flask_apscheduler import APScheduler as FlaskAPScheduler

    app = Flask(__name__)
    begin = time.perf_counter()
    scheduler = FlaskAPScheduler(app=app)
    func = _func(kind)
    for i in range(n):
        scheduler.add_job(
            f"j{i}", func, trigger="date", run_date=t0, args=(i,), misfire_grace_time=None
        )
    scheduler.start()
    ready = _ready(begin, t0)
    if ready is not None:
        burst = jobs.BURST
        assert burst is not None
        time.sleep(max(0.0, t0.timestamp() - time.time() - 0.005))
        cpu = time.process_time()
        if not burst.done.wait(120):
            raise TimeoutError("the burst did not finish")
        burst.cpu = time.process_time() - cpu  # no event loop: loop_cpu stays NaN
    scheduler.shutdown(wait=False)
    return ready
