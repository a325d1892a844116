"""Scenario 6: the app while its job store is out: a locked SQLite file, a silent PostgreSQL.

A Quart app under Hypercorn (one worker, in a subprocess) keeps ``JOBS`` coroutine
interval jobs in a SQLAlchemyJobStore and serves a plain ``GET /health``. Once every job
has fired, the store goes out for ``outage`` seconds:

* SQLite: another process holds ``BEGIN EXCLUSIVE`` on the store's file (every read and
  write waits for pysqlite's 5 s busy timeout, then fails);
* PostgreSQL: the store's engine talks to the server through a TCP proxy of this
  benchmark's own (on 127.0.0.1, in a thread of this process), which stops forwarding:
  connections stay open and nothing passes, in either direction, as when the server
  stops answering. The PostgreSQL server itself is never touched.

During the outage this process asks ``/health`` at ``RATE`` requests per second (an open
loop: each request is timed from when it was due), and a probe coroutine in the app
records how late the serving loop wakes up from 1 ms sleeps. After the outage: how long
until a job fires again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from bench._http import HOST, Connection, get_json, http_request, serve
from bench._util import (
    NONE,
    QS,
    RAW,
    Column,
    Ratio,
    Scenario,
    Target,
    free_port,
    interleaved,
    percentile,
)

SQLITE = "SQLite locked"
PG = "PostgreSQL silent"
VARIANTS = ((SQLITE, NONE), (SQLITE, RAW), (SQLITE, QS), (PG, RAW), (PG, QS))
#: The variants --quick runs (the others print n/a): two keep it under 30 s here.
QUICK = ((SQLITE, QS), (PG, QS))
JOBS = 5
PERIOD = 0.5
#: ``/health`` requests per second during the outage.
RATE = 20
#: A request not answered this long after it was due counts as failed, at this latency.
REQUEST_TIMEOUT = 10.0
#: Seconds between retries after a store error, for both schedulers (the default is 10 s:
#: a shorter one shows the recovery within the measurement).
RETRY_INTERVAL = 1.0
PG_USERS = ("postgres", "root")
PG_PORT = 5432

HOLDER = """\
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def run(quick: bool, rounds: int | None) -> Scenario:
    outage = 5.0 if quick else 20.0
    recovery = 4.0 if quick else 10.0
    rounds = rounds or (1 if quick else 3)
    scenario = Scenario(
        name="store_outage",
        title=f"6. Store outage: the job store out for {outage:g} s, {RATE} req/s to /health",
        params={
            "outage_s": outage,
            "jobs": JOBS,
            "period_s": PERIOD,
            "http_rate": RATE,
            "retry_interval_s": RETRY_INTERVAL,
            "rounds": rounds,
        },
        group_header="store",
        columns=[
            Column("lag_p99_ms", "loop lag p99 ms", "{:.2f}"),
            Column("lag_max_ms", "loop lag max ms", "{:,.1f}"),
            Column("route_p50_ms", "/health p50 ms", "{:,.2f}"),
            Column("route_p99_ms", "/health p99 ms", "{:,.1f}"),
            Column("route_max_ms", "/health max ms", "{:,.1f}"),
            Column("route_ok", "/health answered", "{:.0f}"),
            Column("fires_during", "fires in outage", "{:.0f}"),
            Column("resume_s", "first fire after outage s", "{:.2f}"),
        ],
        ratios=[Ratio("/health p99 ÷ quart_sched", "route_p99_ms", QS, row_over_ref=True)],
    )
    pg_user, pg_reason = _pg_user()
    for group, impl in VARIANTS:
        row = scenario.row(impl, group)
        if group == PG and pg_user is None:
            row.unavailable = pg_reason
        elif quick and (group, impl) not in QUICK:
            row.unavailable = "not run with --quick"

    def measure(_index: int, variant: tuple[str, str]) -> None:
        group, impl = variant
        row = scenario.row(impl, group)
        if row.unavailable is None:
            row.rounds.append(asyncio.run(_measure(impl, group, outage, recovery, pg_user)))

    interleaved(rounds, VARIANTS, measure)
    for group in (SQLITE, PG):
        if not scenario.value(QS, group, "route_sent") > 0:
            continue  # not measured (no PostgreSQL here)
        scenario.targets += [
            Target(
                f"quart_sched loop lag p99 ({group})",
                scenario.value(QS, group, "lag_p99_ms"),
                5,
                False,
                " ms",
            ),
            Target(
                f"quart_sched /health p99 ({group})",
                scenario.value(QS, group, "route_p99_ms"),
                50,
                False,
                " ms",
            ),
        ]
    sent = int(RATE * outage)
    scenario.notes += [
        f"SQLite: another process holds BEGIN EXCLUSIVE on the store's file for {outage:g} s "
        "(pysqlite's default 5 s busy timeout); PostgreSQL: a TCP proxy between the store "
        "and the server forwards nothing for as long (connections held open)",
        f"/health answered: of {sent} requests sent during the outage, those answered 200 "
        f"within {REQUEST_TIMEOUT:g} s of when they were due (an unanswered one counts at "
        f"{REQUEST_TIMEOUT:g} s in the latency figures)",
        "fires in outage: runs that started during the outage (5 jobs at 0.5 s: 10 a "
        "second when the store works)",
        "loop lag: a coroutine on the serving loop sleeping 1 ms over and over, how late it "
        "wakes up, during the outage",
        f"first fire after outage: from the end of the outage to the next run of any of the "
        f"{JOBS} jobs ('-': none within {recovery:g} s); both schedulers retry the store "
        f"every {RETRY_INTERVAL:g} s (SCHEDULER_JOBSTORE_RETRY_INTERVAL / "
        "jobstore_retry_interval)",
        "quart_sched: its default config (run history on) plus the SQLAlchemyJobStore; "
        "raw APScheduler: AsyncIOScheduler with the same store, started in the same app",
        "no scheduler: the same app without a scheduler (its SQLite row: the file it "
        "does not use is locked): the floor of this machine while it measures",
        "Flask-APScheduler is not in this table: its scheduler runs in a thread of its own "
        "beside a threaded WSGI server, so there is no serving loop to stall",
    ]
    return scenario


# --------------------------------------------------------------------- PostgreSQL


def _pg_user() -> tuple[str | None, str]:
    """A user that the local test database (127.0.0.1:5432, db ``test``) lets in."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg (v3) is not installed"
    for user in PG_USERS:
        try:
            with psycopg.connect(
                f"postgresql://{user}@{HOST}:{PG_PORT}/test", connect_timeout=2
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            continue
        return user, ""
    return None, f"no PostgreSQL server answers at {HOST}:{PG_PORT} (database test)"


def _drop_table(user: str, table: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{user}@{HOST}:{PG_PORT}/test", autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')


class StallingProxy:
    """A TCP proxy from 127.0.0.1:``port`` to 127.0.0.1:``upstream``, on an event loop
    in a thread of its own. :meth:`stall` stops all forwarding: open connections stay
    open and carry nothing, new ones are accepted and never connected upstream, as when
    a server (or the network to it) stops answering. :meth:`resume` lets it all through
    again, in order."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._main, name="stalling-proxy", daemon=True)
        self._ready = threading.Event()

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self.port

    def stall(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, HOST, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in self._writers:
                writer.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


# ------------------------------------------------------------------ measurement


async def _probe_route(port: int, duration: float) -> list[tuple[float, bool]]:
    """``GET /health`` at ``RATE``/s for ``duration`` s; (latency from due, answered 200)
    of each, a request still unanswered after ``REQUEST_TIMEOUT`` s counting as failed."""
    request = http_request("GET", "/health", port)
    idle: list[Connection] = []
    results: list[tuple[float, bool]] = []

    async def one(due: float) -> None:
        conn = idle.pop() if idle else Connection(port)
        ok = False
        try:
            remaining = REQUEST_TIMEOUT - (time.perf_counter() - due)
            status, _body = await asyncio.wait_for(conn.request(request), max(remaining, 0.001))
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            conn.close()
        else:
            ok = status == 200
            idle.append(conn)
        results.append((min(time.perf_counter() - due, REQUEST_TIMEOUT), ok))

    tasks = []
    begin = time.perf_counter() + 0.01
    for index in range(int(RATE * duration)):
        due = begin + index / RATE
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(max(due, time.perf_counter()))))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return results


async def _stats(port: int, since: float, until: float) -> dict[str, Any]:
    stats: dict[str, Any] = await asyncio.wait_for(
        get_json(port, f"/bench/outage?since={since}&until={until}"), 60
    )
    return stats


async def _wait_for_fires(port: int, count: int, after: float, deadline: float) -> list[float]:
    """Poll until ``count`` fires happened at or after ``after``, or ``deadline`` passed."""
    while True:
        fires = [f for f in (await _stats(port, 0, 0))["fires"] if f >= after]
        if len(fires) >= count or time.time() >= deadline:
            return fires
        await asyncio.sleep(0.1)


async def _measure(
    impl: str, group: str, outage: float, recovery: float, pg_user: str | None
) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="bench-outage-")
    proxy: StallingProxy | None = None
    holder: asyncio.subprocess.Process | None = None
    table = "apscheduler_jobs"
    db = os.path.join(tmp, "jobs.sqlite")
    try:
        if group == SQLITE:
            url = f"sqlite:///{db}"
        else:
            assert pg_user is not None
            proxy = StallingProxy(PG_PORT)
            table = f"quart_sched_bench_outage_{uuid.uuid4().hex[:10]}"
            url = f"postgresql+psycopg://{pg_user}@{HOST}:{proxy.start()}/test"
        params = {
            "variant": impl,
            "url": url,
            "tablename": table,
            "jobs": JOBS,
            "period": PERIOD,
            "start_in": 0.5,
            "retry_interval": RETRY_INTERVAL,
        }
        port = free_port()
        server = serve("store_outage", port, params, "/health")
        try:
            await server.wait_ready()
            started = time.time()
            warm = await _wait_for_fires(port, JOBS if impl != NONE else 0, 0, started + 30)
            if len(warm) < JOBS and impl != NONE:
                raise RuntimeError(f"{impl}: only {len(warm)} fires before the outage")
            ended: list[float] = []
            over = asyncio.Event()

            def end_outage() -> None:
                if proxy is not None:
                    proxy.resume()
                ended.append(time.time())
                over.set()

            if proxy is None:
                holder = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", HOLDER, db, str(outage), stdout=subprocess.PIPE
                )
                assert holder.stdout is not None
                if (await holder.stdout.readline()).strip() != b"locked":
                    raise RuntimeError("the lock holder did not take the lock")
                # It lets go of the lock by itself after `outage` seconds.
                holder_done = asyncio.create_task(holder.wait())
                holder_done.add_done_callback(lambda _task: end_outage())
            else:
                proxy.stall()
                asyncio.get_running_loop().call_later(outage, end_outage)
            begin = time.time()
            route = await _probe_route(port, outage)
            await over.wait()
            end = ended[0]
            stats = await _stats(port, begin, end)
            after = [] if impl == NONE else await _wait_for_fires(port, 1, end, end + recovery)
        finally:
            server.stop()
    finally:
        if holder is not None and holder.returncode is None:
            holder.kill()
            await holder.wait()
        if proxy is not None:
            proxy.close()
            if pg_user is not None:
                with contextlib.suppress(Exception):
                    _drop_table(pg_user, table)
        shutil.rmtree(tmp, ignore_errors=True)
    lags = stats["lags"]
    latencies = [latency for latency, _ok in route]
    first_after = min(after, default=math.nan)
    fires: dict[str, float] = {}
    if impl != NONE:
        fires = {
            "fires_during": float(sum(begin <= f < end for f in stats["fires"])),
            "resumed": float(bool(after)),
            "resume_s": first_after - end,
        }
    return {
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "lag_max_ms": max(lags, default=math.nan) * 1000,
        "lag_probes": float(len(lags)),
        "route_p50_ms": percentile(latencies, 50) * 1000,
        "route_p99_ms": percentile(latencies, 99) * 1000,
        "route_max_ms": max(latencies, default=math.nan) * 1000,
        "route_ok": float(sum(ok for _latency, ok in route)),
        "route_sent": float(len(route)),
        **fires,
    }
