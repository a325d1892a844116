"""Chaos: the leader of real Hypercorn processes is paused or killed, over and over.

* ``hypercorn -w 4`` on one host (the file backend): the leader's worker is SIGSTOPped
  for twice the lease's TTL, then SIGCONTed, ten times. A standby takes over once the
  lease expires; the resumed worker steps down without running anything it had not
  claimed before the pause, and says ``standby``.
* two process groups standing for two hosts (``hypercorn -w 2`` each, their own
  ``SCHEDULER_HOST_NAME``) on a shared job store, so that ``"auto"`` coordinates through
  it (PostgreSQL, Redis; and a SQLite store with the file backend, two deployments on one
  host): the leader's whole group is SIGKILLed and started again 3 s later, ten times.

The app (``tests/apps/chaos_app.py``) runs two per-second jobs (interval and cron) with
``coalesce=False`` and a 30 s grace time; every run inserts a row into a PostgreSQL table
with no unique key. Afterwards: no (job, scheduled time) twice, and none missing except
around a failover (from ``MARGIN_BEFORE`` s before the kill to ``MARGIN_AFTER`` s after
the new leader's first run). Failover times (kill or pause → the new leader's first run)
are printed (``pytest -s``) and are in the assertion messages. ``QUART_SCHED_CHAOS_CYCLES``
changes the number of cycles (default 10).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apps.harness import DEADLINE, Process, hypercorn

from quart_sched._coordination.backend import LEASE_TTL

from coordination_support import POSTGRESQL_URL, REDIS_URL, require_server
from support import free_port

APPS = Path(__file__).parent / "apps"
CYCLES = int(os.environ.get("QUART_SCHED_CHAOS_CYCLES", "10"))
#: A fire scheduled this long before a kill may be lost with the leader that took it.
MARGIN_BEFORE = 2.0
#: ... and this long after the new leader's first run (it catches up on the rest).
MARGIN_AFTER = 1.0
#: How long a group stays dead before it is started again.
DEAD_FOR = 3.0
JOBS = ("tick_interval", "tick_cron")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Run:
    job_id: str
    run_time: datetime
    host: str
    pid: int
    ran_at: float  # time.time() when the run started


class Runs:
    """The table every run of the app inserts into (no unique key)."""

    def __init__(self) -> None:
        import psycopg

        self.table = f"quart_sched_chaos_runs_{uuid.uuid4().hex[:10]}"
        self._conn = psycopg.connect(POSTGRESQL_URL, autocommit=True)
        self._conn.execute(
            f'CREATE TABLE "{self.table}" (job_id TEXT NOT NULL, run_time TIMESTAMPTZ NOT NULL, '
            "host TEXT NOT NULL, pid INTEGER NOT NULL, ran_at DOUBLE PRECISION NOT NULL)"
        )

    def all(self) -> list[Run]:
        rows = self._conn.execute(
            f'SELECT job_id, run_time, host, pid, ran_at FROM "{self.table}"'
        ).fetchall()
        return [Run(*row) for row in rows]

    def first_run(self, since: float, by: Callable[[Run], bool]) -> Run | None:
        """The earliest run started at or after ``since`` by a process ``by`` accepts."""
        runs = [run for run in self.all() if run.ran_at >= since and by(run)]
        return min(runs, key=lambda run: run.ran_at, default=None)

    def drop(self) -> None:
        self._conn.execute(f'DROP TABLE IF EXISTS "{self.table}"')
        self._conn.close()


@pytest.fixture
def runs() -> Iterator[Runs]:
    require_server("postgresql")
    table = Runs()
    yield table
    table.drop()


# ------------------------------------------------------------------------ the servers


def scheduler_info(port: int, timeout: float = DEADLINE) -> tuple[int, dict[str, Any]]:
    """(the pid of the worker that answered, ``GET /scheduler``), on a new connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/scheduler", timeout=2.0)
            if response.status_code == 200:
                return int(response.headers["X-Chaos-Pid"]), response.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"GET /scheduler on port {port} not answered in {timeout} s")
        time.sleep(0.05)


def answered_as(port: int, pid: int, role: str) -> bool:
    """One ``GET /scheduler``: answered by worker ``pid``, saying ``role``? (Workers share
    the listening socket: each new connection goes to one of them.)"""
    answered_by, info = scheduler_info(port)
    return answered_by == pid and info["role"] == role


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` every 50 ms until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout} s")
        time.sleep(0.05)
    return found


def parent_of(pid: int) -> int:
    """The parent's pid, from /proc (Linux): never signal a process that is not ours."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def serve(port: int, workers: int, **env: str) -> Process:
    return hypercorn("chaos_app:app", port, "--workers", str(workers), cwd=APPS, **env)


# ---------------------------------------------------------------------------- checks


@dataclass
class Failover:
    """One pause or kill of the leader, and the first run by the process that took over."""

    what: str
    began: float
    first_run: Run

    @property
    def seconds(self) -> float:
        return self.first_run.ran_at - self.began

    def covers(self, run_time: datetime) -> bool:
        at = run_time.timestamp()
        return self.began - MARGIN_BEFORE <= at <= self.first_run.ran_at + MARGIN_AFTER


def summary(failovers: list[Failover]) -> str:
    times = [f.seconds for f in failovers]
    lines = [f"  {f.what}: failover {f.seconds:.2f} s" for f in failovers]
    lines.append(
        f"  {len(times)} failovers (kill or pause → first run by the new leader): "
        f"min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s"
    )
    return "\n".join(lines)


def check_runs(all_runs: list[Run], failovers: list[Failover]) -> str:
    """Each fire ran at most once, and every fire between a job's first and last recorded
    runs ran, except around a failover. Returns a report (printed, and in failures)."""
    report = summary(failovers)
    counts = Counter((run.job_id, run.run_time) for run in all_runs)
    twice = sorted((job, when.isoformat(), n) for (job, when), n in counts.items() if n > 1)
    assert not twice, f"fires run more than once (job, time, count): {twice}\n{report}"
    lost_in_windows = []
    for job in JOBS:
        times = sorted(when for job_id, when in counts if job_id == job)
        assert len(times) > 10, f"{job}: only {len(times)} runs recorded\n{report}"
        expected, at = set(), times[0]
        while at <= times[-1]:
            expected.add(at)
            at += timedelta(seconds=1)
        missing = sorted(expected - set(times))
        outside = [t.isoformat() for t in missing if not any(f.covers(t) for f in failovers)]
        assert not outside, (
            f"{job}: fires never run, away from any failover: {outside}\n"
            f"(failover windows: {MARGIN_BEFORE} s before the kill to {MARGIN_AFTER} s after "
            f"the first run by the new leader)\n{report}"
        )
        lost_in_windows += [f"{job}@{t.isoformat()}" for t in missing]
    return (
        f"{report}\n  {len(all_runs)} runs, none twice; lost around a failover: "
        f"{len(lost_in_windows)} {lost_in_windows}"
    )


# -------------------------------------------------------------- one host, SIGSTOP


@pytest.mark.timeout(120 + CYCLES * 25)
def test_sigstopped_leader_worker_is_replaced_and_steps_down_on_sigcont(
    runs: Runs, tmp_path: Path
) -> None:
    env = {
        "CHAOS_RECORD": POSTGRESQL_URL,
        "CHAOS_TABLE": runs.table,
        "CHAOS_INSTANCE": str(tmp_path / "instance"),
    }
    port = free_port()
    failovers: list[Failover] = []
    stopped: list[int] = []
    began = time.monotonic()
    with serve(port, 4, **env) as server:
        wait_for(lambda: runs.first_run(0, lambda _run: True), DEADLINE, "a first run")
        for cycle in range(CYCLES):
            _pid, info = scheduler_info(port)
            assert info["coordination"]["backend"] == "file", info
            leader = info["leader"]["pid"]
            assert parent_of(leader) == server.pid, f"the leader {leader} is not a worker here"
            stopped_at = time.time()
            os.kill(leader, signal.SIGSTOP)
            try:
                # The lease expires TTL s after its last renewal; a standby takes it within
                # its next poll and at once runs the fires that came due meanwhile.
                first = wait_for(
                    lambda: runs.first_run(stopped_at, lambda run: run.pid != leader),  # noqa: B023
                    2 * LEASE_TTL,
                    f"cycle {cycle}: a run by another worker while pid {leader} is stopped",
                )
                time.sleep(max(0.0, stopped_at + 2 * LEASE_TTL - time.time()))
            finally:
                os.kill(leader, signal.SIGCONT)
            failovers.append(Failover(f"cycle {cycle}: SIGSTOP pid {leader}", stopped_at, first))
            stopped.append(leader)
            assert first.pid != leader
            # Resumed, the old leader steps down: GET /scheduler answered by it says standby.
            wait_for(
                lambda: answered_as(port, leader, "standby"),  # noqa: B023
                DEADLINE,
                f"cycle {cycle}: pid {leader} answering role=standby after SIGCONT",
            )
            server_alive(server)
        time.sleep(2)  # the last runs are recorded
    elapsed = time.monotonic() - began

    recorded = runs.all()
    report = check_runs(recorded, failovers)
    # Until the next pause (of the worker that took over), the paused leader ran only
    # fires it had claimed before its pause: none scheduled after it.
    ends = [f.began for f in failovers[1:]] + [float("inf")]
    for failover, end, pid in zip(failovers, ends, stopped, strict=True):
        late = [
            run
            for run in recorded
            if run.pid == pid
            and failover.began <= run.ran_at < end
            and run.run_time.timestamp() > failover.began
        ]
        assert not late, f"pid {pid} ran fires due after its pause: {late}\n{report}"
    print(f"\nSIGSTOP x {CYCLES}, hypercorn -w 4, file backend, {elapsed:.0f} s:\n{report}")


def server_alive(server: Process) -> None:
    assert server.popen.poll() is None, f"hypercorn exited\n{server.dump()}"


# ------------------------------------------------------------ two hosts, SIGKILL


class Group:
    """One host's deployment: ``hypercorn -w 2`` with its own ``SCHEDULER_HOST_NAME``."""

    def __init__(self, host: str, env: dict[str, str]) -> None:
        self.host = host
        self.env = {**env, "SCHEDULER_HOST_NAME": host}
        self.port = 0
        self.proc: Process | None = None

    def start(self) -> None:
        self.port = free_port()
        self.proc = serve(self.port, 2, **self.env)

    def wait_serving(self) -> None:
        """Serving means started: a worker serves once it knows whether it leads."""
        scheduler_info(self.port)

    def kill(self) -> None:
        """SIGKILL to the Hypercorn parent and its workers at once."""
        assert self.proc is not None
        self.proc.send_to_group(signal.SIGKILL)
        self.proc.close()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.close()


#: backend -> (module of quart_sched._coordination, server it needs)
SHARED = {
    "file": ("file", None),
    "postgresql": ("postgres", "postgresql"),
    "redis": ("redis", "redis"),
}


@pytest.fixture
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of an app whose default job store makes "auto" pick ``backend``."""
    backend = request.param
    module, server = SHARED[backend]
    pytest.importorskip(
        f"quart_sched._coordination.{module}",
        reason=f"the {backend} coordination backend (quart_sched/_coordination/{module}.py) "
        "is not in this tree",
    )
    if server is not None:
        require_server(server)
    key = f"quart_sched_chaos_jobs_{uuid.uuid4().hex[:10]}"
    env = {"CHAOS_STORE_KEY": key, "CHAOS_INSTANCE": str(tmp_path / "instance")}
    if backend == "file":  # two deployments on one host: one instance folder, one SQLite store
        env["CHAOS_STORE"] = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    elif backend == "postgresql":
        env["CHAOS_STORE"] = POSTGRESQL_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    else:
        env["CHAOS_STORE"] = REDIS_URL
    yield env
    if backend == "postgresql":
        import psycopg

        with psycopg.connect(POSTGRESQL_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{key}"')
    elif backend == "redis":
        import redis

        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(f"{key}.jobs", f"{key}.run_times")


@pytest.mark.timeout(120 + CYCLES * 20)
@pytest.mark.parametrize("shared_store", list(SHARED), indirect=True)
def test_sigkilled_leader_group_is_replaced_by_the_other_host(
    shared_store: dict[str, str], runs: Runs, request: pytest.FixtureRequest
) -> None:
    backend = request.node.callspec.params["shared_store"]
    env = {**shared_store, "CHAOS_RECORD": POSTGRESQL_URL, "CHAOS_TABLE": runs.table}
    groups = [Group("host-a", env), Group("host-b", env)]
    failovers: list[Failover] = []
    began = time.monotonic()
    try:
        for group in groups:
            group.start()
        for group in groups:
            group.wait_serving()
        wait_for(lambda: runs.first_run(0, lambda _run: True), DEADLINE, "a first run")
        for cycle in range(CYCLES):
            _pid, info = scheduler_info(groups[0].port)
            assert info["coordination"]["backend"] == backend, info
            assert info["leader"] is not None, info
            (victim,) = [g for g in groups if g.host == info["leader"]["host"]]
            (other,) = [g for g in groups if g is not victim]
            killed_at = time.time()
            victim.kill()
            first = wait_for(
                lambda: runs.first_run(killed_at, lambda run: run.host == other.host),  # noqa: B023
                DEADLINE,
                f"cycle {cycle}: a run on {other.host} after {victim.host} was killed",
            )
            failovers.append(Failover(f"cycle {cycle}: SIGKILL {victim.host}", killed_at, first))
            time.sleep(max(0.0, killed_at + DEAD_FOR - time.time()))
            victim.start()
            victim.wait_serving()
        time.sleep(2)  # the last runs are recorded
    finally:
        for group in groups:
            group.close()
    elapsed = time.monotonic() - began

    report = check_runs(runs.all(), failovers)
    print(f"\nSIGKILL of a group x {CYCLES}, 2 x hypercorn -w 2, {backend}, {elapsed:.0f} s:")
    print(report)
