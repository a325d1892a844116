"""``python -m bench --profile NAME``: where the time goes in one measurement.

Each profile runs one scenario's measurement in this process under cProfile, enabled
only around the part the scenario times, and prints the top functions by own time and
by cumulative time. They are the evidence behind docs/performance.md.
"""

from __future__ import annotations

import asyncio
import cProfile
import logging
import pstats
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from bench import burst, jobs, loop_health
from bench._util import (
    QS,
    QS_HISTORY,
    RAW,
    fresh_instance_path,
    median,
    quart_sched_config,
    run_child,
)


def _print(profile: cProfile.Profile, title: str, limit: int = 25) -> None:
    print(f"== {title}")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


def _burst(impl: str, kind: str, n: int = 5000) -> None:
    """Profile the dispatch of a burst only: from T0 until the last job has run."""
    profile = cProfile.Profile()
    original = burst._wait_done

    async def profiled_wait(t0: datetime, timeout: float = 120.0) -> None:
        # _wait_done is awaited as soon as the jobs are declared: sleep to T0 unprofiled.
        await asyncio.sleep(max(0.0, t0.timestamp() - time.time() - 0.01))
        profile.enable()
        try:
            await original(t0, timeout)
        finally:
            profile.disable()

    burst._wait_done = profiled_wait  # type: ignore[assignment]
    jobs.BURST = jobs.Burst(n)
    t0 = datetime.now(timezone.utc) + timedelta(seconds=10)
    try:
        asyncio.run(burst._on_loop(impl, kind, n, t0, {}))
    finally:
        burst._wait_done = original  # type: ignore[assignment]
    _print(profile, f"burst of {n} {kind} jobs, {impl}: dispatch only")


def _declare(n: int = 5000) -> None:
    """Profile declaring N jobs on a quart_sched that has not started (as at import)."""
    from quart import Quart

    from quart_sched import APScheduler

    app = Quart(__name__, instance_path=fresh_instance_path())
    app.config.update(quart_sched_config())
    scheduler = APScheduler(app=app)
    run_date = datetime.now(timezone.utc) + timedelta(hours=1)
    profile = cProfile.Profile()
    profile.enable()
    for i in range(n):
        scheduler.add_job(f"j{i}", jobs.noop, trigger="date", run_date=run_date)
    profile.disable()
    _print(profile, f"quart_sched: declaring {n} jobs before start")


def _burst_gc(n: int = 5000, rounds: int = 3) -> None:
    """Burst figures with the garbage collector on, then disabled from T0 on (medians of
    fresh processes, as in the benchmark)."""
    print(f"== burst of {n} jobs: garbage collector on vs disabled during the dispatch")
    for kind in burst.KINDS:
        for impl in (RAW, QS):
            for disable in (False, True):
                params = {"impl": impl, "kind": kind, "n": n, "offset": 2.0}
                params["disable_gc"] = disable
                runs = [run_child("burst", "measure", params, 180) for _ in range(rounds)]
                throughput = median(r["throughput"] for r in runs)
                loop_cpu = median(r["loop_cpu_us"] for r in runs)
                gc_ms = median(r["gc_ms"] for r in runs)
                print(
                    f"{kind:>9} {impl:>16} gc {'off' if disable else 'on '}: "
                    f"{throughput:8,.0f} jobs/s, loop CPU {loop_cpu:4.0f} us/job, "
                    f"GC {gc_ms:4.0f} ms"
                )


def _loop_gil(seconds: float = 5.0) -> None:
    """Loop lag with CPU-bound plain jobs at two GIL switch intervals: the lag follows
    the interval, so the GIL (not the scheduler) is what delays the loop."""
    print("== loop lag, quart_sched, 100 CPU-bound plain jobs/s (50 ms each)")
    # Runs skipped or missed while the pool is saturated are expected here: quiet them.
    for name in ("quart_sched", "apscheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    default = sys.getswitchinterval()
    for interval in (default, 0.001, 0.0002):
        sys.setswitchinterval(interval)
        try:
            figures = loop_health.measure(
                {"impl": QS, "kind": "cpu", "seconds": seconds, "quick": False}
            )
        finally:
            sys.setswitchinterval(default)
        print(
            f"switch interval {interval * 1000:5.2f} ms: lag p50 {figures['lag_p50_ms']:6.2f} ms, "
            f"p99 {figures['lag_p99_ms']:7.2f} ms, runs/s {figures['runs_per_s']:.0f}"
        )
    # The same jobs in processes instead of threads: no GIL shared with the loop (but on
    # this machine's 2 cores, far less CPU than the jobs ask for: runs are skipped).
    figures = loop_health.measure(
        {
            "impl": QS,
            "kind": "cpu",
            "seconds": seconds,
            "quick": False,
            "executors": {"default": {"type": "processpool", "max_workers": 2}},
        }
    )
    print(
        f"processpool executor (2 processes): lag p50 {figures['lag_p50_ms']:6.2f} ms, "
        f"p99 {figures['lag_p99_ms']:7.2f} ms, runs/s {figures['runs_per_s']:.0f} "
        "(counted in the worker processes: not visible here)"
    )


def _redeclare(n: int = 1000) -> None:
    """Profile a quart_sched start that re-declares N config jobs already in SQLite."""
    import tempfile

    from quart import Quart

    from bench.persistence import FUNC, _job_kwargs
    from quart_sched import APScheduler

    specs = [{"id": f"j{i}", "func": FUNC, **_job_kwargs(i)} for i in range(n)]

    async def main(url: str) -> None:
        def make() -> APScheduler:
            app = Quart(__name__, instance_path=fresh_instance_path())
            app.config.update(quart_sched_config())
            app.config.update(
                SCHEDULER_TIMEZONE="UTC",
                SCHEDULER_JOBSTORES={"default": {"type": "sqlalchemy", "url": url}},
                SCHEDULER_JOBS=specs,
            )
            return APScheduler(app=app)

        first = make()
        first.start()
        await asyncio.sleep(0)
        await first.scheduler.aclose()
        profile = cProfile.Profile()
        profile.enable()
        again = make()
        again.start()
        await asyncio.sleep(0)
        profile.disable()
        await again.scheduler.aclose()
        _print(profile, f"quart_sched: start re-declaring {n} jobs stored in SQLite")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        asyncio.run(main(f"sqlite:///{tmp}/jobs.sqlite"))


PROFILES: dict[str, Callable[[], Any]] = {
    "burst-coroutine": lambda: _burst(QS, "coroutine"),
    "burst-plain": lambda: _burst(QS, "plain"),
    "burst-coroutine-history": lambda: _burst(QS_HISTORY, "coroutine"),
    "burst-plain-history": lambda: _burst(QS_HISTORY, "plain"),
    "burst-coroutine-raw": lambda: _burst(RAW, "coroutine"),
    "burst-plain-raw": lambda: _burst(RAW, "plain"),
    "declare": _declare,
    "burst-gc": _burst_gc,
    "loop-gil": _loop_gil,
    "redeclare": _redeclare,
}
