"""Scenario 6: cost as the job count grows, against raw APScheduler at the same sizes.

N interval jobs (``async def``), staggered so that the whole set fires at a fixed rate
whatever N is (period = N ÷ rate), in a memory store (1k, 10k, 100k) and in a SQLite
store (10k, 100k). quart_sched runs in its default configuration (app context, run
history on). Figures per size:

- add ms/job: memory store, declaring all N before start, then starting; SQLite store,
  1,000 add_job() calls on a running scheduler whose store already holds the N jobs
  (the N are bulk-loaded in one transaction first: APScheduler writes one transaction
  per job, which would take minutes at 100k and measures the disk, not the scheduler).
- wake-up µs/fire: the event loop thread's CPU time over the window, per fire (all of
  it: taking due jobs, recording next run times, running the no-op job, history).
- lateness p99: start minus scheduled time, over the window.
- RSS B/job: growth of resident memory from before adding the jobs to after the start.
"""

from __future__ import annotations

import asyncio
import math
import pickle
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench import jobs
from bench._util import (
    QS_HISTORY,
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

IMPLS = (RAW, QS_HISTORY)
FUNC = "bench.jobs:scale_tick"
#: Fires per second of the whole set, per store kind (SQLite writes each fire's next
#: run time: one transaction each).
RATE = {"memory": 200, "sqlite": 50}
SQLITE_ADDS = 200


def run(quick: bool, rounds: int | None) -> Scenario:
    rounds = rounds or 1
    sizes = (
        [("memory", 1000)]
        if quick
        else [
            ("memory", 1000),
            ("memory", 10_000),
            ("memory", 100_000),
            ("sqlite", 10_000),
            ("sqlite", 100_000),
        ]
    )
    window = 0.5 if quick else 4.0
    scenario = Scenario(
        name="scale",
        title="6. Scale: cost per job and per fire as the job count grows",
        params={"sizes": [f"{kind} {n}" for kind, n in sizes], "window_s": window},
        group_header="store, jobs",
        columns=[
            Column("add_ms", "add ms/job", "{:.3f}"),
            Column("start_s", "start s", "{:.2f}"),
            Column("fire_us", "wake-up µs/fire (loop CPU)", "{:.0f}"),
            Column("fire_cpu_us", "µs/fire (process CPU)", "{:.0f}"),
            Column("late_p99_ms", "lateness p99 ms", "{:.2f}"),
            Column("rss_per_job", "RSS B/job", "{:,.0f}"),
            Column("fires", "fires", "{:,.0f}"),
        ],
        ratios=[Ratio("process µs/fire ÷ raw", "fire_cpu_us", RAW, row_over_ref=True)],
    )
    for kind, n in sizes:
        for impl in IMPLS:
            scenario.row(impl, f"{kind} {n:,}")

    def measure(_index: int, variant: tuple[str, str, int]) -> None:
        impl, kind, n = variant
        row = scenario.row(impl, f"{kind} {n:,}")
        params = {"impl": impl, "kind": kind, "n": n, "window": window, "quick": quick}
        row.rounds.append(run_child("scale", "measure", params, timeout=900))

    interleaved(rounds, [(impl, kind, n) for kind, n in sizes for impl in IMPLS], measure)

    # Cost per fire must not grow with N faster than raw APScheduler's.
    for kind in ("memory", "sqlite"):
        groups = [f"{k} {n:,}" for k, n in sizes if k == kind]
        if len(groups) < 2:
            continue
        small, large = groups[0], groups[-1]
        growth = {
            impl: scenario.value(impl, large, "fire_cpu_us")
            / scenario.value(impl, small, "fire_cpu_us")
            for impl in IMPLS
        }
        scenario.targets.append(
            Target(
                f"quart_sched default process µs/fire growth {small} → {large} ÷ raw "
                f"APScheduler's "
                f"({growth[QS_HISTORY]:.2f}x vs {growth[RAW]:.2f}x)",
                growth[QS_HISTORY] / growth[RAW],
                1.1,
                False,
            )
        )
    mem = [f"memory {n:,}" for k, n in sizes if k == "memory" and n >= 10_000]
    for group in mem:
        scenario.targets.append(
            Target(
                f"quart_sched default RSS per job ≤ raw APScheduler's + 10% ({group})",
                scenario.value(QS_HISTORY, group, "rss_per_job")
                / scenario.value(RAW, group, "rss_per_job"),
                1.1,
                False,
            )
        )
    scenario.notes += [
        f"jobs fire at {RATE['memory']}/s (memory) and {RATE['sqlite']}/s (SQLite) in all, "
        "whatever N: each job's period is N ÷ rate",
        "add: memory, declaring all N before start (per job); SQLite, "
        f"{SQLITE_ADDS:,} add_job() calls (after the window) on a running scheduler over "
        "a store holding N (bulk-loaded first)",
        "wake-up µs/fire: CPU time of the event loop's thread over the window ÷ fires; "
        "process CPU: all threads (quart_sched takes due jobs from a persistent store in a "
        "worker thread, raw APScheduler on the loop)",
        "RSS: growth of resident memory while adding the jobs and starting, per job",
    ]
    return scenario


# ---------------------------------------------------------------------- in the child


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        import os

        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(params: dict[str, Any]) -> dict[str, float]:
    impl, kind, n, window = params["impl"], params["kind"], params["n"], params["window"]
    import apscheduler.schedulers.asyncio  # noqa: F401 - imports are not measured
    import quart  # noqa: F401

    if impl == QS_HISTORY:
        import quart_sched  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        return asyncio.run(_measure(impl, kind, n, window, tmp, params.get("quick", False)))


def _specs(n: int, rate: float, t0: datetime) -> list[tuple[int, datetime, float]]:
    period = n / rate
    return [(i, t0 + timedelta(seconds=i * period / n), period) for i in range(n)]


def _bulk_load(url: str, specs: list[tuple[int, datetime, float]]) -> None:
    """Write the jobs into an APScheduler SQLite store in one transaction."""
    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from apscheduler.util import datetime_to_utc_timestamp

    store = SQLAlchemyJobStore(url=url)
    maker = BackgroundScheduler(timezone=timezone.utc)
    store.start(maker, "default")
    rows = []
    for i, start, period in specs:
        job = Job(
            maker,
            id=f"j{i}",
            func=FUNC,
            trigger=IntervalTrigger(seconds=period, start_date=start, timezone=timezone.utc),
            executor="default",
            args=(i,),
            kwargs={},
            name=f"j{i}",
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
            next_run_time=start,
        )
        state = pickle.dumps(job.__getstate__(), store.pickle_protocol)
        rows.append(
            {"id": job.id, "next_run_time": datetime_to_utc_timestamp(start), "job_state": state}
        )
    with store.engine.begin() as connection:
        connection.execute(store.jobs_t.insert(), rows)
    store.shutdown()


async def _measure(
    impl: str, kind: str, n: int, window: float, tmp: str, quick: bool
) -> dict[str, float]:
    rate = RATE[kind]
    lead = (1.0 if quick else 3.0) + n / 5_000  # to declare and start before the first fire
    adds = 100 if quick else SQLITE_ADDS
    settle = 0.3 if quick else 1.0
    url = f"sqlite:///{tmp}/jobs.sqlite"
    rss0 = _rss()
    begin = time.perf_counter()
    t0 = datetime.now(timezone.utc) + timedelta(seconds=lead)
    specs = _specs(n, rate, t0)
    if kind == "sqlite":
        _bulk_load(url, specs)
        # The adds measured later get their own ids, far in the future.
        t0 = datetime.now(timezone.utc) + timedelta(seconds=lead)
    stores = {"default": {"type": "sqlalchemy", "url": url}} if kind == "sqlite" else None
    add_s = math.nan
    if impl == RAW:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        sched: Any = AsyncIOScheduler(timezone=timezone.utc)
        if kind == "sqlite":
            sched.add_jobstore(SQLAlchemyJobStore(url=url), "default")
        else:
            t = time.perf_counter()
            for i, start, period in specs:
                sched.add_job(
                    jobs.scale_tick,
                    "interval",
                    seconds=period,
                    start_date=start,
                    args=(i,),
                    id=f"j{i}",
                    misfire_grace_time=None,
                    coalesce=True,
                )
            add_s = time.perf_counter() - t
        sched.start()
        add = sched.add_job
        close: Any = lambda: sched.shutdown(wait=False)  # noqa: E731
        app_cm: Any = None
    else:
        from quart import Quart

        from quart_sched import APScheduler

        app = Quart(__name__, instance_path=fresh_instance_path())
        app.config.update(quart_sched_config(f"{tmp}/history.sqlite"))
        app.config.update(SCHEDULER_TIMEZONE="UTC")
        if stores:
            app.config["SCHEDULER_JOBSTORES"] = stores
        ext = APScheduler(app=app)
        if kind == "memory":
            t = time.perf_counter()
            for i, start, period in specs:
                ext.add_job(
                    f"j{i}",
                    jobs.scale_tick,
                    trigger="interval",
                    seconds=period,
                    start_date=start,
                    args=(i,),
                    misfire_grace_time=None,
                    coalesce=True,
                )
            add_s = time.perf_counter() - t
        app_cm = app.test_app()
        # Jobs fall behind while the adds are measured (each is a SQLite transaction):
        # the catch-up before the stop may take longer than the test app's 5 s default.
        app_cm.shutdown_timeout = 600
        await app_cm.__aenter__()
        ext.start()

        def add(func: Any, trigger: str, **kw: Any) -> Any:
            return ext.add_job(kw.pop("id"), func, trigger=trigger, **kw)

        async def aclose() -> None:
            await app_cm.__aexit__(None, None, None)

        close = aclose
    await asyncio.sleep(0)
    start_s = time.perf_counter() - begin
    rss = _rss() - rss0
    # The window: from T0 + 1 s (past any start-up catch-up) for `window` seconds.
    w0 = t0.timestamp() + settle
    await asyncio.sleep(max(0.0, w0 - time.time()))
    cpu, process_cpu = time.thread_time(), time.process_time()
    before = len(jobs.SCALE_RUNS)
    await asyncio.sleep(window)
    loop_cpu = time.thread_time() - cpu
    process_cpu = time.process_time() - process_cpu
    runs = jobs.SCALE_RUNS[before:]
    if kind == "sqlite":
        far = datetime.now(timezone.utc) + timedelta(days=1)
        t = time.perf_counter()
        for k in range(adds):
            add(jobs.scale_tick, "date", run_date=far, args=(k,), id=f"add{k}")
            if k % 50 == 0:
                await asyncio.sleep(0)
        add_s = (time.perf_counter() - t) / adds * n  # per job below
    result = close()
    if asyncio.iscoroutine(result):
        await result
    period = n / rate
    late = []
    for i, at in runs:
        late.append((at - specs[i][1].timestamp()) % period)
    return {
        "add_ms": add_s * 1000 / n,
        "start_s": start_s,
        "fire_us": loop_cpu * 1e6 / max(len(runs), 1),
        "fire_cpu_us": process_cpu * 1e6 / max(len(runs), 1),
        "late_p99_ms": percentile(late, 99) * 1000 if late else math.nan,
        "rss_per_job": rss / n,
        "fires": len(runs),
    }
