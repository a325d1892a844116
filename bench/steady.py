"""Scenario 2: start lateness of periodic jobs while Hypercorn serves HTTP load.

A Quart app runs under Hypercorn (one worker) in a subprocess with ``jobs`` coroutine
interval jobs at 1 s, while this process sends ``GET /ping`` at a fixed rate over 16
keep-alive connections (an open loop: a slow answer does not slow the load down).
Staggered jobs are due at even intervals (1,000 jobs: one run per millisecond); aligned
jobs are all due at the same instant every second (a 1,000-job burst each second).
The app records every run's lateness; only runs inside the load window count.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench._http import get_json, http_request, open_loop, serve
from bench._util import (
    NONE,
    QS,
    QS_HISTORY,
    QT,
    RAW,
    Column,
    NotAvailable,
    Ratio,
    Scenario,
    Target,
    free_port,
    history_supported,
    interleaved,
    percentile,
)

STAGGERED = "staggered"
ALIGNED = "aligned"
#: The variants --quick runs (the others print n/a).
QUICK = ((STAGGERED, NONE), (STAGGERED, RAW), (STAGGERED, QS))
VARIANTS = (
    (STAGGERED, NONE),
    (STAGGERED, RAW),
    (STAGGERED, QS),
    (STAGGERED, QS_HISTORY),
    (STAGGERED, QT),
    (ALIGNED, RAW),
    (ALIGNED, QS),
    (ALIGNED, QS_HISTORY),
)
PERIOD = 1.0
#: Requests per second: well under what one Hypercorn worker serves here (about
#: 1,500/s for this route), so latency shows responsiveness, not a queue.
RATE = 400
CONNECTIONS = 16


def run(quick: bool, rounds: int | None) -> Scenario:
    n = 100 if quick else 1000
    duration = 3.0 if quick else 30.0
    rounds = rounds or (1 if quick else 3)
    scenario = Scenario(
        name="steady",
        title=f"2. Steady lateness: {n:,} interval jobs at 1 s under {RATE} HTTP req/s",
        params={"jobs": n, "seconds": duration, "http_rate": RATE, "rounds": rounds},
        columns=[
            Column("late_p50_ms", "lateness p50 ms", "{:.2f}"),
            Column("late_p99_ms", "lateness p99 ms", "{:.2f}"),
            Column("late_max_ms", "lateness max ms", "{:.1f}"),
            Column("runs_pct", "runs done %", "{:.1f}"),
            Column("http_p50_ms", "HTTP p50 ms", "{:.2f}"),
            Column("http_p99_ms", "HTTP p99 ms", "{:.2f}"),
        ],
        ratios=[
            Ratio("lateness p99 ÷ quart_sched", "late_p99_ms", QS, row_over_ref=True),
            Ratio("HTTP p99 ÷ no scheduler", "http_p99_ms", NONE, row_over_ref=True),
        ],
    )
    for group, impl in VARIANTS:
        row = scenario.row(impl, group)
        if impl == QS_HISTORY and not history_supported():
            row.unavailable = "run history is not in quart_sched yet (roadmap item 1)"
        elif quick and (group, impl) not in QUICK:
            row.unavailable = "not run with --quick"

    def measure(_index: int, variant: tuple[str, str]) -> None:
        group, impl = variant
        row = scenario.row(impl, group)
        if row.unavailable is None:
            try:
                row.rounds.append(
                    asyncio.run(_measure(impl, group == ALIGNED, n, duration, quick))
                )
            except NotAvailable as exc:
                row.unavailable = str(exc)

    interleaved(rounds, VARIANTS, measure)

    # The targets judge the default configuration (run history on).
    default = QS_HISTORY if quick is False else QS
    for group, limit in ((STAGGERED, 1.2), (ALIGNED, 3.0)):
        base = scenario.value(NONE, STAGGERED, "http_p99_ms")
        target = Target(
            f"quart_sched default HTTP p99 ÷ no scheduler ({group})",
            scenario.value(default, group, "http_p99_ms") / base,
            limit,
            False,
        )
        target.per_round = _per_round(scenario, (default, group), (NONE, STAGGERED), "http_p99_ms")
        scenario.targets.append(target)
    for group in (STAGGERED, ALIGNED):
        target = Target(
            f"quart_sched default lateness p99 ÷ raw APScheduler's ({group})",
            scenario.value(default, group, "late_p99_ms")
            / scenario.value(RAW, group, "late_p99_ms"),
            1.0,
            False,
        )
        target.per_round = _per_round(scenario, (default, group), (RAW, group), "late_p99_ms")
        target.higher_is_better = False
        scenario.targets.append(target)
    scenario.notes += [
        "lateness: job start minus its scheduled time (APScheduler: start_date + k x 1 s; "
        "quart-tasks: last start + 1 s, its own schedule, which drifts by each lateness)",
        "HTTP latency: from when each request was due to its last byte (open loop)",
        f"runs done: runs in the window ÷ jobs x seconds; {CONNECTIONS} connections",
        "the quart_sched rows pin SCHEDULER_HISTORY off; the history row writes every run "
        "to a SQLite file",
    ]
    return scenario


def _per_round(
    scenario: Scenario, row: tuple[str, str], ref: tuple[str, str], key: str
) -> list[float]:
    a, b = scenario.row(*row), scenario.row(*ref)
    return [
        x[key] / y[key] if y.get(key) else float("nan")
        for x, y in zip(a.rounds, b.rounds, strict=False)
    ]


async def _measure(
    impl: str, aligned: bool, n: int, duration: float, quick: bool
) -> dict[str, float]:
    port = free_port()
    warmup = 0.5 if quick else 2.0
    params: dict[str, Any] = {
        "variant": impl,
        "jobs": 0 if impl == NONE else n,
        "period": PERIOD,
        "aligned": aligned,
        "start_in": warmup,
    }
    server = serve("steady", port, params, "/ping")
    try:
        await server.wait_ready()
        request = http_request("GET", "/ping", port)
        # Warm up (and let the first runs, due `warmup` s after the app was built, happen).
        await open_loop(port, lambda _i: request, rate=RATE, duration=warmup, connections=4)
        since = time.time()
        http = await open_loop(
            port, lambda _i: request, rate=RATE, duration=duration, connections=CONNECTIONS
        )
        until = time.time()
        stats = await get_json(port, f"/bench/stats?since={since}&until={until}")
    finally:
        server.stop()
    late = stats["lateness"]
    expected = params["jobs"] * (until - since) / PERIOD
    result = {
        "http_p50_ms": http["p50_ms"],
        "http_p99_ms": http["p99_ms"],
        "http_errors": http["errors"],
        "http_rps": http["rps"],
    }
    if impl != NONE:
        result.update(
            late_p50_ms=percentile(late, 50) * 1000,
            late_p99_ms=percentile(late, 99) * 1000,
            late_max_ms=max(late) * 1000,
            runs_pct=100 * len(late) / expected,
        )
    return result
