"""Scenario 4: REST API throughput over HTTP, quart_sched vs Flask-APScheduler.

Each server runs in its own process with the same 1,000 jobs (a third each interval,
cron and date; none due), and answers Flask-APScheduler's routes. This process sends
requests over 16 keep-alive connections, each sending its next request as soon as the
last one is answered (a closed loop), for a fixed number of requests (or a time cap).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

from bench._http import closed_loop, get_json, http_request, serve
from bench._util import (
    QS,
    Column,
    Ratio,
    Scenario,
    free_port,
    interleaved,
)

QS_HYPERCORN = f"{QS} (Hypercorn)"
QS_UVLOOP = f"{QS} (Hypercorn, uvloop)"
FAS_GUNICORN = "Flask-APScheduler (gunicorn gthread, 4 threads)"
FAS_WAITRESS = "Flask-APScheduler (waitress, 4 threads)"
SERVERS = {
    QS_HYPERCORN: "api-quart",
    QS_UVLOOP: "api-quart-uvloop",
    FAS_GUNICORN: "gunicorn",
    FAS_WAITRESS: "api-waitress",
}
CONCURRENCY = 16
JOBS = 1000
ENDPOINTS = ("GET /jobs/<id>", "GET /jobs", "POST /jobs")
PREFIX = "/scheduler"


def run(quick: bool, rounds: int | None) -> Scenario:
    rounds = rounds or (1 if quick else 3)
    counts = {
        "GET /jobs/<id>": 500 if quick else 5000,
        "GET /jobs": 20 if quick else 300,
        "POST /jobs": 200 if quick else 2000,
    }
    cap = 5.0 if quick else 30.0
    scenario = Scenario(
        name="api",
        title=f"4. REST API over HTTP: {JOBS:,} jobs, {CONCURRENCY} connections",
        params={
            "jobs": JOBS,
            "concurrency": CONCURRENCY,
            "requests": counts,
            "time_cap_s": cap,
            "rounds": rounds,
        },
        group_header="endpoint",
        columns=[
            Column("rps", "requests/s", "{:,.0f}"),
            Column("p50_ms", "p50 ms", "{:.1f}"),
            Column("p99_ms", "p99 ms", "{:.1f}"),
            Column("errors", "errors", "{:.0f}"),
        ],
        ratios=[Ratio("quart_sched ÷ row, req/s", "rps", QS_HYPERCORN)],
    )
    missing = {
        impl: f"{module} is not installed (pip install -e '.[bench]')"
        for impl, module in (
            (QS_UVLOOP, "uvloop"),
            (FAS_GUNICORN, "gunicorn"),
            (FAS_WAITRESS, "waitress"),
        )
        if importlib.util.find_spec(module) is None
    }
    for endpoint in ENDPOINTS:
        for impl in SERVERS:
            scenario.row(impl, endpoint).unavailable = missing.get(impl)

    def measure(_index: int, impl: str) -> None:
        if impl in missing:
            return
        results = asyncio.run(_measure(SERVERS[impl], counts, cap))
        for endpoint, result in results.items():
            scenario.row(impl, endpoint).rounds.append(result)

    interleaved(rounds, list(SERVERS), measure)
    for endpoint in ENDPOINTS:
        for ours in (QS_HYPERCORN, QS_UVLOOP):
            for peer in (FAS_GUNICORN, FAS_WAITRESS):
                if ours in missing or peer in missing:
                    continue
                ratio = scenario.value(ours, endpoint, "rps") / scenario.value(
                    peer, endpoint, "rps"
                )
                scenario.notes.append(f"{endpoint}: {ours} ÷ {peer}: {ratio:.2f}x req/s")
    scenario.notes += [
        "one server process each (Flask-APScheduler runs one scheduler per process); "
        "Hypercorn's asyncio worker, and its uvloop worker (`hypercorn -k uvloop`, the "
        "`quart-sched[uvloop]` extra); gunicorn -w 1 --threads 4 (gthread); waitress's "
        "defaults (4 threads)",
        "POST /jobs adds a new date job each time (so the store grows past 1,000)",
        "latency: from sending a request to its last byte",
    ]
    return scenario


async def _measure(kind: str, counts: dict[str, int], cap: float) -> dict[str, dict[str, float]]:
    port = free_port()
    server = serve(kind, port, {"jobs": JOBS}, PREFIX)
    results = {}
    try:
        await server.wait_ready()
        listed = await get_json(port, f"{PREFIX}/jobs")
        assert len(listed) == JOBS, f"{kind} lists {len(listed)} jobs, not {JOBS}"

        def get_one(i: int) -> bytes:
            return http_request("GET", f"{PREFIX}/jobs/job-{(i * 7919) % JOBS}", port)

        get_all = http_request("GET", f"{PREFIX}/jobs", port)

        def post(i: int) -> bytes:
            body = {
                "id": f"new-{i}",
                "func": "bench.jobs:noop",
                "trigger": "date",
                "run_date": "2099-01-01T00:00:00+00:00",
            }
            return http_request("POST", f"{PREFIX}/jobs", port, body)

        # Warm-up: imports, caches and connections, not measured.
        await closed_loop(port, get_one, total=200, concurrency=CONCURRENCY, time_cap=10)
        plan: dict[str, Callable[[int], bytes]] = {
            "GET /jobs/<id>": get_one,
            "GET /jobs": lambda _i: get_all,
            "POST /jobs": post,
        }
        for endpoint, make in plan.items():
            results[endpoint] = await closed_loop(
                port, make, total=counts[endpoint], concurrency=CONCURRENCY, time_cap=cap
            )
    finally:
        server.stop()
    return results


__all__: list[Any] = ["run"]
