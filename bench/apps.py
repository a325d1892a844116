"""The apps the HTTP scenarios serve, built from a params dict (``BENCH_PARAMS``)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from bench import jobs
from bench._util import NONE, QS, QS_HISTORY, QT, RAW, fresh_instance_path, quart_sched_config

API_JOB_FUNC = "bench.jobs:noop"
OUTAGE_FUNC = "bench.jobs:outage_fire"
FAILOVER_FUNC = "bench.jobs:failover_tick"
FAR_FUTURE = "2099-01-01T00:00:00+00:00"


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    if params is not None:
        return params
    loaded: dict[str, Any] = json.loads(os.environ["BENCH_PARAMS"])
    return loaded


# ------------------------------------------------------------------ scenario 2: steady


def steady_app(params: dict[str, Any] | None = None) -> Any:
    """A Quart app answering ``GET /ping`` while a scheduler runs ``jobs`` interval jobs.

    ``variant``: "no scheduler", raw APScheduler, quart_sched (with or without history)
    or quart-tasks. Job ``i`` is due at ``base + k * period`` (aligned) or
    ``base + (i / jobs + k) * period`` (staggered: an even 1,000 runs/s).
    """
    from quart import Quart, request

    p = _params(params)
    variant, n, period = p["variant"], p["jobs"], p["period"]
    base = time.time() + p.get("start_in", 2.0)
    anchors = [base + (0.0 if p["aligned"] else i * period / n) for i in range(n)]

    app = Quart("bench.steady", instance_path=fresh_instance_path())

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        since = float(request.args["since"])
        until = float(request.args["until"])
        late = [lateness for at, lateness in jobs.STEADY.runs if since <= at < until]
        return {"lateness": late, "total": len(jobs.STEADY.runs)}

    def utc(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, timezone.utc)

    if variant == RAW:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        raw = AsyncIOScheduler(timezone=timezone.utc)
        for i, anchor in enumerate(anchors):
            raw.add_job(
                jobs.steady_coro,
                "interval",
                seconds=period,
                start_date=utc(anchor),
                args=(anchor, period),
                id=f"j{i}",
            )

        @app.before_serving
        async def start_raw() -> None:
            raw.start()

        @app.after_serving
        async def stop_raw() -> None:
            raw.shutdown(wait=False)

    elif variant in (QS, QS_HISTORY):
        from quart_sched import APScheduler

        history = None
        if variant == QS_HISTORY:
            history = os.path.join(tempfile.mkdtemp(prefix="bench-"), "history.sqlite")
        app.config.update(quart_sched_config(history))
        app.config["SCHEDULER_TIMEZONE"] = "UTC"
        scheduler = APScheduler(app=app)
        for i, anchor in enumerate(anchors):
            scheduler.add_job(
                f"j{i}",
                jobs.steady_coro,
                trigger="interval",
                seconds=period,
                start_date=utc(anchor),
                args=(anchor, period),
            )
        scheduler.start()  # no loop yet: starts when the app serves

    elif variant == QT:
        from quart_tasks import QuartTasks
        from quart_tasks.store import MemoryStore

        first_due = {f"t{i}": anchor for i, anchor in enumerate(anchors)}

        class TargetStore(MemoryStore):
            """Last runs, first ones made up so that task ``i`` is first due at anchor
            ``i``; notes when each run is due, for the task to measure its lateness."""

            async def get(self, key: str, default: datetime) -> datetime:
                last = self._executions.get(key) or utc(first_due[key] - period)
                jobs.STEADY.targets[key] = last.timestamp() + period
                return last

        tasks = QuartTasks(app, store=TargetStore(), tzinfo=timezone.utc)
        for name in first_due:
            tasks.add_periodic_task(
                partial(jobs.steady_task, name), timedelta(seconds=period), name=name
            )
    return app


# ------------------------------------------------------------------- scenario 4: API


def _api_jobs(n: int) -> list[dict[str, Any]]:
    """``n`` jobs, a third each interval, cron and date, none due during the run."""
    specs: list[dict[str, Any]] = []
    for i in range(n):
        spec: dict[str, Any] = {"id": f"job-{i}", "func": API_JOB_FUNC, "args": [i]}
        if i % 3 == 0:
            spec.update(trigger="interval", hours=6, start_date="2020-01-01T00:00:00+00:00")
        elif i % 3 == 1:
            spec.update(trigger="cron", hour=3, minute=i % 60)
        else:
            spec.update(trigger="date", run_date=FAR_FUTURE)
        specs.append(spec)
    return specs


def quart_api_app(params: dict[str, Any] | None = None) -> Any:
    from quart import Quart

    from quart_sched import APScheduler

    p = _params(params)
    app = Quart("bench.api", instance_path=fresh_instance_path())
    app.config.update(quart_sched_config())
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_TIMEZONE="UTC")
    scheduler = APScheduler(app=app)
    for spec in _api_jobs(p["jobs"]):
        scheduler.add_job(**spec)
    scheduler.start()
    return app


def flask_api_app(params: dict[str, Any] | None = None) -> Any:
    from flask import Flask
    from flask_apscheduler import APScheduler as FlaskAPScheduler

    p = _params(params)
    app = Flask("bench.api")
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_TIMEZONE="UTC")
    scheduler = FlaskAPScheduler(app=app)
    for spec in _api_jobs(p["jobs"]):
        scheduler.add_job(**spec)
    scheduler.start()
    return app


# ------------------------------------------------------------ scenario 6: store outage


def outage_app(params: dict[str, Any] | None = None) -> Any:
    """A Quart app with a plain ``GET /health`` and ``jobs`` coroutine interval jobs in a
    SQLAlchemyJobStore at ``url``, under raw APScheduler or quart_sched (default config),
    or with no scheduler at all (the floor).

    A probe coroutine on the serving loop sleeps 1 ms over and over and records how late
    it wakes up; ``GET /bench/outage`` returns those lags and the fire times.
    """
    import asyncio

    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from quart import Quart, request

    p = _params(params)
    variant, n, period = p["variant"], p["jobs"], p["period"]
    base = time.time() + p.get("start_in", 1.0)
    lags: list[tuple[float, float, float]] = []
    app = Quart("bench.store_outage", instance_path=fresh_instance_path())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/bench/outage")
    async def outage_stats() -> dict[str, Any]:
        since = float(request.args["since"])
        until = float(request.args["until"])
        # A probe overlapping the window counts: a loop blocked for the whole outage is one
        # long sample that ends after it.
        return {
            "lags": [lag for began, ended, lag in lags if began < until and ended >= since],
            "fires": list(jobs.OUTAGE_FIRES),
        }

    async def probe() -> None:
        while True:
            began, before = time.time(), time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((began, time.time(), time.perf_counter() - before - 0.001))

    probes: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start_probe() -> None:
        probes.append(asyncio.get_running_loop().create_task(probe()))

    @app.after_serving
    async def stop_probe() -> None:
        for task in probes:
            task.cancel()

    def store() -> Any:
        return SQLAlchemyJobStore(url=p["url"], tablename=p["tablename"])

    def utc(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, timezone.utc)

    specs = [
        {
            "trigger": "interval",
            "seconds": period,
            "start_date": utc(base + i * period / n),
            "replace_existing": True,
        }
        for i in range(n)
    ]
    if variant == NONE:
        pass  # the floor: the probe and the route alone
    elif variant == RAW:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        raw = AsyncIOScheduler(
            timezone=timezone.utc,
            jobstores={"default": store()},
            jobstore_retry_interval=p["retry_interval"],
        )
        for i, spec in enumerate(specs):
            raw.add_job(OUTAGE_FUNC, id=f"o{i}", **spec)

        @app.before_serving
        async def start_raw() -> None:
            raw.start()

        @app.after_serving
        async def stop_raw() -> None:
            raw.shutdown(wait=False)

    elif variant == QS:
        from quart_sched import APScheduler

        # The default config: run history on (here in a file of its own), plus the store.
        history = os.path.join(tempfile.mkdtemp(prefix="bench-"), "history.sqlite")
        app.config.update(quart_sched_config(history))
        app.config.update(
            SCHEDULER_TIMEZONE="UTC",
            SCHEDULER_JOBSTORES={"default": store()},
            SCHEDULER_JOBSTORE_RETRY_INTERVAL=p["retry_interval"],
        )
        scheduler = APScheduler(app=app)
        for i, spec in enumerate(specs):
            scheduler.add_job(f"o{i}", OUTAGE_FUNC, **spec)
        scheduler.start()  # no loop yet: starts when the app serves
    else:
        raise ValueError(variant)
    return app


# --------------------------------------------------------------- scenario 8: failover


def failover_app(params: dict[str, Any] | None = None) -> Any:
    """One member of the failover scenario: a Quart app (served by ``app.test_app()`` in
    ``bench._member``) whose scheduler coordinates through ``coordination`` (a directory,
    a ``postgresql://`` or ``redis://`` URL) under the app name ``app_name``, with one
    ``async def`` interval job every ``period`` s (``coalesce=False``, ``grace`` s of
    misfire grace time). Writes ``LEADER <epoch> <pid> <wall time>`` to stdout when it
    becomes the leader; the job writes ``RUN`` lines (``bench.jobs.failover_tick``).
    """
    from quart import Quart

    from quart_sched import APScheduler, signals

    p = _params(params)
    app = Quart(p["app_name"], instance_path=fresh_instance_path())
    app.config.update(quart_sched_config())  # history off: the coordination alone
    app.config.update(SCHEDULER_TIMEZONE="UTC", SCHEDULER_COORDINATION=p["coordination"])
    scheduler = APScheduler(app=app)
    scheduler.add_job(
        "tick",
        FAILOVER_FUNC,
        trigger="interval",
        seconds=p["period"],
        start_date="2020-01-01T00:00:00+00:00",  # one grid of run times for every member
        coalesce=False,
        misfire_grace_time=p["grace"],
    )

    async def became_leader(_sender: Any, leader: dict[str, Any]) -> None:
        line = f"LEADER {leader['epoch']} {os.getpid()} {time.time():.6f}\n"
        os.write(1, line.encode())

    signals.became_leader.connect(became_leader, weak=False)
    scheduler.start()  # no loop yet: starts when the app serves
    return app
