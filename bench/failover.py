"""Scenario 8: failover (the leader SIGKILLed, a standby waiting), and the fire ledger's cost.

**Failover**, for each coordination backend (the file backend, PostgreSQL, Redis; one
whose module is not in this quart_sched or whose server does not answer is n/a): three
member processes (``python -m bench._member``: a Quart app under ``app.test_app()``, no
HTTP server) coordinate under one app name; one leads and runs an ``async def`` interval
job every ``PERIOD`` s (``coalesce=False``, ``GRACE`` s of misfire grace time) that
writes each run to stdout. ``cycles`` times: at a random moment, SIGKILL the leader; wait
until a standby says it leads and has run the job; start a replacement member and wait
until it stands by. Figures per cycle:

- takeover: from the kill to the new leader's ``became_leader`` signal (its ``role``
  turns ``leader`` then);
- first run: from the kill to the new leader's first run of the job (it runs at once the
  fires that came due meanwhile, so this is the takeover plus the ledger claim, or the
  next fire if none came due);

and over the whole run: fires run twice (duplicates) and fires on the job's grid never run
(lost), from the first to the last run seen.

**Ledger cost**: the burst of scenario 1 (``n`` one-off jobs due at the same instant, the
default configuration: app context and run history on) with ``SCHEDULER_COORDINATION``
off, and on through each backend. Each due pass claims its fires in the ledger in one
round trip before they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench._util import (
    Column,
    NotAvailable,
    Ratio,
    Scenario,
    child_cwd,
    child_env,
    interleaved,
    percentile,
    run_child,
)

FILE, POSTGRESQL, REDIS = "file", "PostgreSQL", "Redis"
BACKENDS = (FILE, POSTGRESQL, REDIS)
MODULES = {POSTGRESQL: "postgres", REDIS: "redis"}
MEMBERS = 3
PERIOD = 0.1
GRACE = 5
#: Longest a takeover, a first run or a member's start may take before the run fails.
DEADLINE = 30.0
FAILOVER_ROW = "quart_sched, SIGKILL of the leader"
OFF = "quart_sched, coordination off"
KINDS = ("coroutine", "plain")
LEDGER_TARGET = 0.85
PG_URL = "postgresql://{user}@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def run(quick: bool, rounds: int | None) -> Scenario:
    cycles = 5 if quick else 100
    n = 500 if quick else 5000
    failover_rounds = rounds or 1
    ledger_rounds = rounds or (1 if quick else 5)
    scenario = Scenario(
        name="failover",
        title=f"8. Failover: the leader SIGKILLed {cycles} times, a standby waiting",
        params={
            "cycles": cycles,
            "members": MEMBERS,
            "period_s": PERIOD,
            "burst_jobs": n,
            "failover_rounds": failover_rounds,
            "ledger_rounds": ledger_rounds,
        },
        group_header="backend",
        columns=[
            Column("takeover_p50_ms", "takeover p50 ms", "{:,.0f}"),
            Column("takeover_p99_ms", "takeover p99 ms", "{:,.0f}"),
            Column("takeover_max_ms", "takeover max ms", "{:,.0f}"),
            Column("first_run_p50_ms", "first run p50 ms", "{:,.0f}"),
            Column("first_run_p99_ms", "first run p99 ms", "{:,.0f}"),
            Column("first_run_max_ms", "first run max ms", "{:,.0f}"),
            Column("cycles", "kills", "{:.0f}"),
            Column("runs", "runs", "{:,.0f}"),
            Column("duplicates", "duplicates", "{:.0f}"),
            Column("lost", "lost", "{:.0f}"),
        ],
    )
    locations = {backend: _location(backend) for backend in BACKENDS}
    for backend in BACKENDS:
        row = scenario.row(FAILOVER_ROW, backend)
        location, reason = locations[backend]
        if location is None:
            row.unavailable = reason
            continue
        for _round in range(failover_rounds):
            row.rounds.append(asyncio.run(_failover(location, cycles)))
    scenario.notes += [
        f"{MEMBERS} member processes (a Quart app under app.test_app(), no HTTP server), "
        f"one app name per backend; an async def interval job every {PERIOD:g} s "
        f"(coalesce=False, misfire_grace_time={GRACE:g}) in each member's memory store; "
        "run history off; each kill at a random moment (0-1 s after the previous member "
        "stood by); then a replacement member is started and the next kill waits for it",
        "takeover: kill → the new leader's became_leader signal (when its role turns "
        "leader); first run: kill → its first run of the job (the fires due meanwhile run "
        "at once); one clock (this machine's) for both ends",
        "duplicates: (job, scheduled time) run more than once; lost: fires on the job's "
        "grid between the first and last runs seen that never ran (a leader killed "
        "between its claim and its run loses that fire, unless SCHEDULER_RERUN_INTERRUPTED "
        "names the job)",
        "file: the lease and ledger in a SQLite file, the leader's flock released by the "
        "kernel at its death; PostgreSQL and Redis: the servers of this machine "
        "(127.0.0.1)",
    ]
    scenario.tables.append(_ledger_cost(n, ledger_rounds, locations))
    return scenario


def _location(backend: str) -> tuple[str | None, str]:
    """Where ``backend`` is (``"file"``: a new directory per use), or why it is n/a."""
    if backend == FILE:
        return FILE, ""
    module = f"quart_sched._coordination.{MODULES[backend]}"
    try:
        __import__(module)
    except ImportError as exc:
        return None, f"{module} cannot be imported here ({exc})"
    if backend == POSTGRESQL:
        from bench.store_outage import _pg_user

        user, reason = _pg_user()
        return (None, reason) if user is None else (PG_URL.format(user=user), "")
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            pass
    except OSError:
        return None, "no Redis server answers at 127.0.0.1:6379"
    return REDIS_URL, ""


@contextlib.contextmanager
def _where(location: str | None) -> Iterator[str | bool]:
    """The SCHEDULER_COORDINATION value for one measurement: a fresh directory for the
    file backend (removed afterwards), the URL of a server, False for None (off)."""
    if location is None:
        yield False
        return
    if location != FILE:
        yield location
        return
    directory = tempfile.mkdtemp(prefix="bench-failover-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- failover


@dataclass
class Member:
    """A member process and what it said."""

    proc: asyncio.subprocess.Process
    log: Any
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None


@dataclass
class Watch:
    """Everything the members said: leaderships and runs, in the order read."""

    #: (epoch, pid, wall time)
    leaders: list[tuple[int, int, float]] = field(default_factory=list)
    #: (scheduled run time, pid, wall time)
    runs: list[tuple[float, int, float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The members' stderr files, oldest first.
    logs: list[str] = field(default_factory=list)

    def leader(self) -> tuple[int, int, float] | None:
        return max(self.leaders, default=None)

    async def until(self, found: Any, what: str) -> Any:
        """Wait until ``found()`` returns something truthy, and return it."""
        deadline = time.monotonic() + DEADLINE
        while not (result := found()):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"failover: {what} not seen within {DEADLINE:g} s; the last members' "
                    f"stderr:\n{self._tails()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return result

    def _tails(self) -> str:
        tails = []
        for path in self.logs[-MEMBERS:]:
            with open(path, "rb") as log:
                text = log.read().decode(errors="replace")
            tails.append(f"--- {os.path.basename(path)}\n{text[-2000:]}")
        return "\n".join(tails)


async def _read(member: Member, watch: Watch) -> None:
    assert member.proc.stdout is not None
    while line := await member.proc.stdout.readline():
        kind, *fields = line.decode().split()
        if kind == "RUN":
            watch.runs.append((float(fields[0]), int(fields[1]), float(fields[2])))
        elif kind == "LEADER":
            watch.leaders.append((int(fields[0]), int(fields[1]), float(fields[2])))
        elif kind == "READY":
            member.ready.set()
        watch.changed.set()


async def _start(params: dict[str, Any], watch: Watch, logs: str) -> Member:
    """A new member; its stderr goes to a file in ``logs`` (shown if the run fails)."""
    log = open(os.path.join(logs, f"member-{len(watch.logs)}.log"), "wb")  # noqa: ASYNC230, SIM115
    watch.logs.append(log.name)
    env = child_env()
    env["BENCH_PARAMS"] = json.dumps(params)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._member",
        cwd=child_cwd(),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    member = Member(proc, log=log)
    member.reader = asyncio.create_task(_read(member, watch))
    return member


async def _failover(location: str, cycles: int) -> dict[str, float]:
    with _where(location) as where, tempfile.TemporaryDirectory(prefix="bench-members-") as logs:
        params = {
            "app_name": f"bench_failover_{uuid.uuid4().hex[:12]}",
            "coordination": where,
            "period": PERIOD,
            "grace": GRACE,
        }
        watch = Watch()
        members: dict[int, Member] = {}
        ended: list[Member] = []
        takeovers: list[float] = []
        first_runs: list[float] = []
        try:
            for _ in range(MEMBERS):
                member = await _start(params, watch, logs)
                members[member.proc.pid] = member
            for member in members.values():
                await watch.until(member.ready.is_set, "a member's start")
            await watch.until(lambda: watch.runs, "a first run")
            for _cycle in range(cycles):
                await asyncio.sleep(random.uniform(0.0, 1.0))
                epoch, pid, _at = await watch.until(watch.leader, "a leader")
                killed_at = time.time()
                os.kill(pid, signal.SIGKILL)
                victim = members.pop(pid)
                ended.append(victim)
                await victim.proc.wait()
                _epoch, new_pid, took_at = await watch.until(
                    lambda: (lead := watch.leader()) and lead[0] > epoch and lead,  # noqa: B023
                    "a new leader",
                )
                ran_at = await watch.until(
                    lambda: min(
                        (t for _when, p, t in watch.runs if p == new_pid and t >= killed_at),  # noqa: B023
                        default=None,
                    ),
                    "a run by the new leader",
                )
                takeovers.append(took_at - killed_at)
                first_runs.append(ran_at - killed_at)
                replacement = await _start(params, watch, logs)
                members[replacement.proc.pid] = replacement
                await watch.until(replacement.ready.is_set, "a replacement member's start")
            await asyncio.sleep(2 * PERIOD)
        finally:
            for member in members.values():
                with contextlib.suppress(ProcessLookupError):
                    member.proc.send_signal(signal.SIGTERM)
            for member in members.values():
                try:
                    await asyncio.wait_for(member.proc.wait(), 15)
                except TimeoutError:
                    member.proc.kill()
                    await member.proc.wait()
                if member.reader is not None:
                    await member.reader
            for member in [*members.values(), *ended]:
                member.log.close()
    counts = Counter(round(when / PERIOD) for when, _pid, _t in watch.runs)
    seen = set(counts)
    grid = range(min(seen), max(seen) + 1) if seen else range(0)
    return {
        "takeover_p50_ms": percentile(takeovers, 50) * 1000,
        "takeover_p99_ms": percentile(takeovers, 99) * 1000,
        "takeover_max_ms": max(takeovers, default=math.nan) * 1000,
        "first_run_p50_ms": percentile(first_runs, 50) * 1000,
        "first_run_p99_ms": percentile(first_runs, 99) * 1000,
        "first_run_max_ms": max(first_runs, default=math.nan) * 1000,
        "cycles": float(len(takeovers)),
        "runs": float(len(watch.runs)),
        "duplicates": float(sum(count - 1 for count in counts.values())),
        "lost": float(sum(tick not in seen for tick in grid)),
    }


# ------------------------------------------------------------------------ ledger cost


def _ledger_cost(n: int, rounds: int, locations: dict[str, tuple[str | None, str]]) -> Scenario:
    table = Scenario(
        name="failover-ledger",
        title=f"The fire ledger's cost: {n:,} jobs due at the same instant, coordination "
        "off and on",
        params={"jobs": n, "rounds": rounds},
        columns=[
            Column("throughput", "jobs/s", "{:,.0f}"),
            Column("p50_ms", "p50 lateness ms", "{:.1f}"),
            Column("p99_ms", "p99 lateness ms", "{:.1f}"),
            Column("loop_cpu_us", "loop CPU µs/job", "{:.0f}"),
        ],
        ratios=[Ratio("row ÷ coordination off, jobs/s", "throughput", OFF, row_over_ref=True)],
    )
    variants = [OFF, *(f"quart_sched, {backend}" for backend in BACKENDS)]
    for kind in KINDS:
        for impl in variants:
            row = table.row(impl, kind)
            backend = impl.removeprefix("quart_sched, ")
            if impl != OFF and locations[backend][0] is None:
                row.unavailable = locations[backend][1]

    def measure(_index: int, variant: tuple[str, str]) -> None:
        kind, impl = variant
        row = table.row(impl, kind)
        if row.unavailable is not None:
            return
        backend = impl.removeprefix("quart_sched, ")
        with _where(None if impl == OFF else locations[backend][0]) as where:
            params = {
                "impl": "quart_sched, history on",
                "kind": kind,
                "n": n,
                "offset": 0.3 if n <= 500 else 2.0,
                "config": {"SCHEDULER_COORDINATION": where},
            }
            try:
                row.rounds.append(run_child("burst", "measure", params, timeout=180))
            except NotAvailable as exc:
                row.unavailable = str(exc)

    interleaved(rounds, [(kind, impl) for kind in KINDS for impl in variants], measure)
    for kind in KINDS:
        for backend in BACKENDS:
            impl = f"quart_sched, {backend}"
            if table.row(impl, kind).unavailable is None:
                table.ratio_target(
                    f"coordination on ({backend}) costs ≤ 15% of jobs/s: on ÷ off ≥ "
                    f"{LEDGER_TARGET:g}x ({kind})",
                    impl,
                    OFF,
                    kind,
                    "throughput",
                    LEDGER_TARGET,
                )
    table.notes += [
        "scenario 1's burst in its default configuration (a fresh app context per run, run "
        "history on), SCHEDULER_COORDINATION False or a fresh directory (file) or the "
        "server's URL; the process leads alone, so the cost is the claim of each due "
        "pass's fires in the ledger (one round trip for all of them) before they run",
    ]
    return table
