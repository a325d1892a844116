"""Leadership in one process: apps that share a name and an instance folder stand for the
workers of one deployment (their file locks conflict as those of separate processes do).

The multi-process proofs (Hypercorn workers stopped and killed, hosts on PostgreSQL and
Redis) are in test_chaos.py; the backends' contract in test_coordination_backends.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from quart import Quart

from quart_sched import APScheduler, current_run, signals
from quart_sched._coordination.backend import ACQUIRE_INTERVAL, Member, micros
from quart_sched._coordination.coordinator import Coordinator, Hooks
from quart_sched._coordination.file import FileBackend
from quart_sched._gate import Fire

from support import wait_until

pytestmark = pytest.mark.timeout(60)

#: (worker, job id, scheduled run time) of every run, across the workers of a test.
RUNS: list[tuple[str, str, datetime]] = []


async def record_run() -> None:
    RUNS.append((current_app_name(), current_run.job_id, current_run.scheduled_run_time))


def record_run_sync() -> None:
    RUNS.append((current_app_name(), current_run.job_id, current_run.scheduled_run_time))


def current_app_name() -> str:
    from quart import current_app

    return str(current_app.config["WORKER"])


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


Worker = tuple[Quart, APScheduler]


@pytest.fixture
def make_worker(tmp_path: Path) -> Callable[..., Worker]:
    """A worker of one deployment: same app name and instance folder as its siblings."""

    def make(name: str, **config: Any) -> Worker:
        app = Quart("deployment", instance_path=str(tmp_path / "instance"))
        app.config.update(
            {
                "WORKER": name,
                "SCHEDULER_API_ENABLED": True,
                "SCHEDULER_SHUTDOWN_TIMEOUT": 1,
                "SCHEDULER_HISTORY": str(tmp_path / "history.sqlite"),
                **config,
            }
        )
        return app, APScheduler(app=app)

    return make


def serve(app: Quart) -> Any:
    """Start the app's scheduler and serve it: serving begins once the scheduler knows
    whether it leads, so workers served one after the other lead in that order."""
    app.extensions["apscheduler"].start()
    return app.test_app()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


async def info(app: Quart) -> dict[str, Any]:
    response = await app.test_client().get("/scheduler")
    assert response.status_code == 200
    data: dict[str, Any] = await response.get_json()
    return data


def files_under(path: Path) -> list[str]:
    return sorted(name for _dir, _subdirs, names in os.walk(path) for name in names)


def _soon(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


async def test_a_lone_process_leads_at_once(
    make_worker: Callable[..., Worker], stack: AsyncExitStack
) -> None:
    app, scheduler = make_worker("a")
    scheduler.add_job("soon", record_run, trigger="date", run_date=_soon(0.3))
    await stack.enter_async_context(serve(app))
    assert scheduler.is_leader  # known once serving has started
    shown = await info(app)
    assert shown["role"] == "leader"
    assert shown["leader"]["pid"] == os.getpid()
    assert shown["leader"]["host"] == scheduler.host_name
    assert isinstance(shown["leader"]["epoch"], int)
    assert shown["coordination"]["backend"] == "file"
    await wait_until(lambda: RUNS, timeout=5)
    assert [run[1] for run in RUNS] == ["soon"]


async def test_one_worker_leads_and_every_fire_runs_once_across_a_handover(
    make_worker: Callable[..., Worker],
) -> None:
    """The standby's in-memory copy of the job is stale when it takes over: without the
    ledger, coalesce=False and a long grace time would make it run again every fire the
    old leader ran."""
    workers = [make_worker(name) for name in ("a", "b")]
    for _app, scheduler in workers:
        scheduler.add_job(
            "tick",
            record_run,
            trigger="interval",
            seconds=0.2,
            coalesce=False,
            misfire_grace_time=60,
        )
    async with AsyncExitStack() as first, AsyncExitStack() as second:
        await first.enter_async_context(serve(workers[0][0]))
        await second.enter_async_context(serve(workers[1][0]))
        leaders = [s.is_leader for _a, s in workers]
        assert leaders == [True, False]
        assert (await info(workers[1][0]))["role"] == "standby"
        await wait_until(lambda: len(RUNS) >= 5, timeout=5)
        await first.aclose()  # the leader stops: it releases leadership at once
        stopped = len(RUNS)
        await wait_until(lambda: workers[1][1].is_leader, timeout=ACQUIRE_INTERVAL + 2)
        await wait_until(lambda: len(RUNS) >= stopped + 5, timeout=5)
    fires = [(job_id, when) for _worker, job_id, when in RUNS]
    assert len(fires) == len(set(fires)), "a fire ran twice"
    assert {worker for worker, _j, _w in RUNS} == {"a", "b"}
    # The new leader caught up on the fires of the handover instead of skipping them.
    times = sorted(when for _j, when in fires)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) < timedelta(seconds=0.3), gaps


async def test_interval_jobs_declared_at_different_moments_share_one_schedule(
    make_worker: Callable[..., Worker],
) -> None:
    """Each process starts an interval job "now plus one interval" unless told: with
    coordination on, every process's job is on one grid, so the new leader neither runs
    the old one's fires again nor adds its own in between."""
    workers = []
    for name in ("a", "b"):
        app, scheduler = make_worker(name)
        scheduler.add_job(
            "tick",
            record_run,
            trigger="interval",
            seconds=0.2,
            coalesce=False,
            misfire_grace_time=60,
        )
        workers.append((app, scheduler))
        await asyncio.sleep(0.13)  # worker b declares its job 130 ms later
    async with AsyncExitStack() as first, AsyncExitStack() as second:
        await first.enter_async_context(serve(workers[0][0]))
        await second.enter_async_context(serve(workers[1][0]))
        await wait_until(lambda: len(RUNS) >= 4, timeout=5)
        await first.aclose()
        stopped = len(RUNS)
        await wait_until(lambda: len(RUNS) >= stopped + 4, timeout=5)
    times = [when for _worker, _job, when in RUNS]
    assert len(times) == len(set(times)), "a fire ran twice"
    step = timedelta(seconds=0.2)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert all((when - epoch) % step == timedelta(0) for when in times), times
    assert {worker for worker, _j, _w in RUNS} == {"a", "b"}


async def test_with_coordination_off_every_worker_runs_jobs_and_is_warned(
    make_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quart_sched")
    workers = [make_worker(name, SCHEDULER_COORDINATION=False) for name in ("a", "b")]
    for _app, scheduler in workers:
        scheduler.add_job("tick", record_run, trigger="interval", seconds=0.2)
    async with serve(workers[0][0]), serve(workers[1][0]):
        assert all(s.is_leader for _a, s in workers)
        shown = await info(workers[0][0])
        assert shown["role"] == "leader" and shown["coordination"] is None
        await wait_until(lambda: {w for w, _j, _t in RUNS} == {"a", "b"}, timeout=5)
    warned = [r for r in caplog.records if "Another process runs this app's jobs" in r.message]
    assert len(warned) == 1


async def test_a_standby_refuses_writes_to_an_in_memory_store_and_names_the_leader(
    make_worker: Callable[..., Worker],
) -> None:
    (leader_app, leader), (standby_app, standby) = make_worker("a"), make_worker("b")
    for scheduler in (leader, standby):
        scheduler.add_job("tick", record_run, trigger="interval", hours=1)
    async with serve(leader_app), serve(standby_app):
        client = standby_app.test_client()
        for response in (
            await client.post("/scheduler/jobs/tick/pause"),
            await client.delete("/scheduler/jobs/tick"),
            await client.patch("/scheduler/jobs/tick", json={"name": "renamed"}),
        ):
            assert response.status_code == 503, (response.status_code, await response.get_data())
            body = await response.get_json()
            assert "standby" in body["error_message"]
            assert "shared job store" in body["error_message"]
        # Nothing changed, and reads still work on the standby.
        job = await (await client.get("/scheduler/jobs/tick")).get_json()
        assert job["name"] == "tick" and job["next_run_time"] is not None
        shown = await info(standby_app)
        assert shown["role"] == "standby"
        assert shown["leader"]["epoch"] == (await info(leader_app))["leader"]["epoch"]
        # A manual run on a standby runs there: it is not a scheduled fire.
        response = await client.post("/scheduler/jobs/tick/run")
        assert response.status_code == 200
        assert [w for w, _j, _t in RUNS] == ["b"]


def _shared_store(tmp_path: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    return {"SCHEDULER_JOBSTORES": {"default": SQLAlchemyJobStore(url=url)}}


async def test_a_write_on_a_standby_reaches_the_leader_through_a_shared_store(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    config = {"SCHEDULER_API_ALLOWED_FUNCS": ["test_coordination:record_run"]}
    (leader_app, _leader), (standby_app, _standby) = (
        make_worker("a", **config, **_shared_store(tmp_path)),
        make_worker("b", **config, **_shared_store(tmp_path)),
    )
    async with serve(leader_app), serve(standby_app):
        client = standby_app.test_client()
        body = {
            "id": "from-standby",
            "func": "test_coordination:record_run",
            "trigger": "date",
            "run_date": _soon(0.2).isoformat(),
        }
        response = await client.post("/scheduler/jobs", json=body)
        assert response.status_code == 200, await response.get_data(as_text=True)
        await wait_until(lambda: RUNS, timeout=5)
        # Reads are the same from any worker.
        seen = await (await leader_app.test_client().get("/scheduler/jobs")).get_json()
        assert seen == await (await client.get("/scheduler/jobs")).get_json()
    assert [("a", "from-standby", datetime.fromisoformat(body["run_date"]))] == RUNS


async def test_a_worker_starting_never_resets_or_resumes_a_stored_job(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    def declare(scheduler: APScheduler) -> None:
        scheduler.add_job("hourly", record_run_sync, trigger="interval", hours=1)
        scheduler.add_job("daily", record_run_sync, trigger="interval", days=1)

    first_app, first = make_worker("a", **_shared_store(tmp_path))
    declare(first)
    async with serve(first_app):
        client = first_app.test_client()
        assert (await client.post("/scheduler/jobs/daily/pause")).status_code == 200
        hourly = (await (await client.get("/scheduler/jobs/hourly")).get_json())["next_run_time"]
        await asyncio.sleep(1.1)  # a reset would move the next run time by this much
        second_app, second = make_worker("b", **_shared_store(tmp_path))
        declare(second)
        async with serve(second_app):
            client = second_app.test_client()
            jobs = {
                job["id"]: job for job in await (await client.get("/scheduler/jobs")).get_json()
            }
    assert jobs["hourly"]["next_run_time"] == hourly
    assert jobs["daily"]["next_run_time"] is None  # still paused


async def test_a_changed_declaration_is_written_and_keeps_its_pause(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    app, scheduler = make_worker("a", **_shared_store(tmp_path))
    scheduler.add_job(
        "job", record_run_sync, trigger="interval", hours=1, name="old", replace_existing=True
    )
    async with serve(app):
        assert (await app.test_client().post("/scheduler/jobs/job/pause")).status_code == 200
    app, scheduler = make_worker("b", **_shared_store(tmp_path))
    scheduler.add_job(
        "job", record_run_sync, trigger="interval", hours=2, name="new", replace_existing=True
    )
    async with serve(app):
        job = await (await app.test_client().get("/scheduler/jobs/job")).get_json()
    assert job["name"] == "new" and job["next_run_time"] is None
    assert "2:00:00" in job["trigger_description"] or job["hours"] == 2


async def test_current_run_inside_both_kinds_of_job(
    make_worker: Callable[..., Worker],
) -> None:
    app, scheduler = make_worker("a")
    at = _soon(0.3)
    scheduler.add_job("async", record_run, trigger="date", run_date=at)
    scheduler.add_job("plain", record_run_sync, trigger="date", run_date=at)
    seen: list[str] = []

    async def remember() -> None:
        seen.append(current_run.run_id)

    scheduler.add_job("ids", remember, trigger="date", run_date=at)
    async with serve(app):
        await wait_until(lambda: len(RUNS) == 2 and seen, timeout=5)
        deadline = time.monotonic() + 5
        while not (page := await scheduler.get_runs("ids")).runs:
            assert time.monotonic() < deadline, "the run was not recorded"
            await asyncio.sleep(0.05)
    assert sorted(RUNS) == [("a", "async", at), ("a", "plain", at)]
    assert [run["run_id"] for run in page.runs] == seen
    assert not current_run
    with pytest.raises(RuntimeError, match="inside a job run"):
        _ = current_run.job_id


async def test_leadership_signals_and_log_lines(
    make_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quart_sched")
    received: list[tuple[str, dict[str, Any]]] = []

    def became(sender: Quart, leader: dict[str, Any]) -> None:
        received.append(("became", leader))

    async def lost(sender: Quart, leader: dict[str, Any]) -> None:
        received.append(("lost", leader))

    signals.became_leader.connect(became)
    signals.lost_leadership.connect(lost)
    try:
        app, _scheduler = make_worker("a")
        async with serve(app):
            await wait_until(lambda: received, timeout=5)
        await wait_until(lambda: len(received) == 2, timeout=5)
    finally:
        signals.became_leader.disconnect(became)
        signals.lost_leadership.disconnect(lost)
    assert [kind for kind, _l in received] == ["became", "lost"]
    assert received[0][1]["pid"] == os.getpid() == received[1][1]["pid"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("leads the scheduler now" in m for m in messages)
    assert any("Leadership released" in m for m in messages)


async def test_two_apps_served_one_after_the_other_each_lead(
    make_worker: Callable[..., Worker],
) -> None:
    for name in ("a", "b"):
        app, scheduler = make_worker(name)
        scheduler.add_job("soon", record_run, trigger="date", run_date=_soon(0.2))
        started = time.monotonic()
        async with serve(app):
            assert scheduler.is_leader
            await wait_until(lambda n=name: any(w == n for w, _j, _t in RUNS), timeout=5)
        assert time.monotonic() - started < 3
    assert [w for w, _j, _t in RUNS] == ["a", "b"]


async def test_history_off_writes_no_run_anywhere(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    app, scheduler = make_worker("a", SCHEDULER_HISTORY=False)
    scheduler.add_job("soon", record_run, trigger="date", run_date=_soon(0.1))
    async with serve(app):
        await wait_until(lambda: RUNS, timeout=5)
    files = await asyncio.to_thread(files_under, tmp_path)
    assert not any("history" in name for name in files), files
    assert all(name.startswith("quart_sched-") for name in files), files
    assert scheduler.history is None


async def test_a_run_lost_with_its_leader_runs_again_only_when_the_job_opted_in(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """The leader is killed during two runs: the next leader runs that fire again for the
    job in SCHEDULER_RERUN_INTERRUPTED, and only for that one."""
    at = _soon(1.0)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).parent / "apps" / "rerun_worker.py"),
        str(tmp_path / "instance"),
        at.isoformat(),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        lines = [(await asyncio.wait_for(child.stdout.readline(), 20)).decode().strip()]
        assert lines == ["leading"]
        app, scheduler = make_worker("b", SCHEDULER_RERUN_INTERRUPTED=["again-*"])
        for job_id in ("again-1", "once"):
            scheduler.add_job(
                job_id, record_run, trigger="date", run_date=at, misfire_grace_time=60
            )
        async with serve(app):
            assert not scheduler.is_leader
            for _ in range(2):
                lines.append(
                    (await asyncio.wait_for(child.stdout.readline(), 20)).decode().strip()
                )
            assert sorted(lines[1:]) == ["started again-1", "started once"]
            child.kill()
            await child.wait()
            await wait_until(lambda: scheduler.is_leader, timeout=5)
            await wait_until(lambda: RUNS, timeout=5)
            await asyncio.sleep(0.5)  # "once" would have run by now
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert [("b", "again-1", at)] == RUNS


async def test_runs_under_way_at_a_graceful_stop_are_not_run_again(
    make_worker: Callable[..., Worker],
) -> None:
    """A leader that stops gracefully settles its runs (it finishes or interrupts them
    itself): the next leader does not run them again, opted in or not."""
    started: list[tuple[str, str]] = []

    async def long_run() -> None:
        started.append((current_app_name(), current_run.job_id))
        await asyncio.sleep(30)

    workers = [make_worker(name, SCHEDULER_RERUN_INTERRUPTED=["*"]) for name in ("a", "b")]
    at = _soon(0.3)
    for _app, scheduler in workers:
        scheduler.add_job("long", long_run, trigger="date", run_date=at, misfire_grace_time=60)
    async with AsyncExitStack() as first, AsyncExitStack() as second:
        await first.enter_async_context(serve(workers[0][0]))
        await second.enter_async_context(serve(workers[1][0]))
        await wait_until(lambda: started, timeout=5)
        await first.aclose()
        await wait_until(lambda: workers[1][1].is_leader, timeout=5)
        await asyncio.sleep(0.5)
    assert started == [("a", "long")]


# Claims made ahead of the fires ------------------------------------------------------------

STARTS: list[tuple[str, datetime]] = []


async def record_start() -> None:
    STARTS.append((current_run.job_id, datetime.now(timezone.utc)))


def _ledger_query(tmp_path: Path, sql: str, *params: Any) -> list[Any]:
    """Rows of ``sql`` on the instance folder's fire ledger (the file backend)."""
    import sqlite3

    [path] = (tmp_path / "instance").glob("quart_sched-*.coordination.sqlite")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


def ledger(tmp_path: Path) -> list[tuple[str, int]]:
    """(job id, run time µs) of every fire claimed in the instance folder's ledger."""
    return sorted(_ledger_query(tmp_path, "SELECT job_id, run_time FROM fires"))


def claimed_at(tmp_path: Path, job_id: str) -> datetime:
    """When the ledger's row of ``job_id``'s one fire was written."""
    [(when,)] = _ledger_query(tmp_path, "SELECT claimed_at FROM fires WHERE job_id=?", job_id)
    return datetime.fromtimestamp(when, timezone.utc)


async def test_a_fire_is_claimed_ahead_of_its_time_and_starts_on_time_once(
    make_worker: Callable[..., Worker],
    stack: AsyncExitStack,
    tmp_path: Path,
) -> None:
    STARTS.clear()
    app, scheduler = make_worker("a", SCHEDULER_CLAIM_AHEAD=1.0)
    at = _soon(1.5)
    scheduler.add_job("ahead", record_start, trigger="date", run_date=at)
    await stack.enter_async_context(serve(app))
    await wait_until(lambda: ledger(tmp_path) == [("ahead", micros(at))], timeout=5)
    assert datetime.now(timezone.utc) < at and not STARTS  # claimed, not started
    await wait_until(lambda: STARTS, timeout=5)
    await asyncio.sleep(0.2)
    [(job_id, started)] = STARTS
    assert job_id == "ahead" and started >= at
    assert claimed_at(tmp_path, "ahead") < at


async def test_a_leader_stopping_gives_back_the_fires_it_claimed_ahead(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """The next leader runs them: a rolling restart loses no fire."""
    workers = [make_worker(name, SCHEDULER_CLAIM_AHEAD=2.0) for name in ("a", "b")]
    at = _soon(1.5)
    for _app, scheduler in workers:
        scheduler.add_job("once", record_run, trigger="date", run_date=at, misfire_grace_time=30)
    async with AsyncExitStack() as first:
        await first.enter_async_context(serve(workers[0][0]))
        await wait_until(lambda: ledger(tmp_path) == [("once", micros(at))], timeout=5)
    assert ledger(tmp_path) == []  # given back
    async with AsyncExitStack() as second:
        await second.enter_async_context(serve(workers[1][0]))
        assert workers[1][1].is_leader
        await wait_until(lambda: RUNS, timeout=5)
        await asyncio.sleep(0.2)
    assert [("b", "once", at)] == RUNS


async def test_a_job_paused_after_its_fire_was_claimed_ahead_does_not_run(
    make_worker: Callable[..., Worker],
    stack: AsyncExitStack,
    tmp_path: Path,
) -> None:
    app, scheduler = make_worker("a", SCHEDULER_CLAIM_AHEAD=2.0)
    at = _soon(1.0)
    scheduler.add_job("paused", record_run, trigger="date", run_date=at)
    await stack.enter_async_context(serve(app))
    await wait_until(lambda: ledger(tmp_path) == [("paused", micros(at))], timeout=5)
    response = await app.test_client().post("/scheduler/jobs/paused/pause")
    assert response.status_code == 200
    await asyncio.sleep(max(0.0, (at - datetime.now(timezone.utc)).total_seconds()) + 0.5)
    assert RUNS == []


def lone_coordinator(backend: FileBackend) -> Coordinator:
    """A coordinator on ``backend`` with hooks that do nothing (no scheduler)."""

    async def no_jobs() -> list[str]:
        return []

    async def no_reruns(fires: list[Fire]) -> None:
        return None

    hooks = Hooks(
        wake=lambda: None, changed=lambda _leading, _lease: None, rerun=no_reruns, job_ids=no_jobs
    )
    return Coordinator(backend, Member("host", os.getpid(), "token"), hooks)


async def test_a_due_fire_waits_for_its_claim_made_ahead_instead_of_racing_it(
    tmp_path: Path,
) -> None:
    """Claimed ahead and come due before that claim answered: granted once, to the pass."""
    coordinator = lone_coordinator(FileBackend("claimahead", directory=str(tmp_path)))
    await coordinator.start()
    try:
        assert coordinator.leading
        at = datetime.now(timezone.utc)
        coordinator.reserve([Fire("j", at)])
        await asyncio.sleep(0)  # its claim now sent...
        due = Fire("j", at)
        assert list(await coordinator.admit([due])) == [due]  # ...and the pass asks
        assert list(await coordinator.admit([Fire("j", at)])) == []  # once
    finally:
        await coordinator.stop()


async def test_with_claims_ahead_off_a_fire_is_claimed_when_due(
    make_worker: Callable[..., Worker], stack: AsyncExitStack, tmp_path: Path
) -> None:
    STARTS.clear()
    app, scheduler = make_worker("a", SCHEDULER_CLAIM_AHEAD=0)
    at = _soon(1.0)
    scheduler.add_job("when-due", record_start, trigger="date", run_date=at)
    await stack.enter_async_context(serve(app))
    await wait_until(lambda: STARTS, timeout=5)
    assert ledger(tmp_path) == [("when-due", micros(at))]
    assert claimed_at(tmp_path, "when-due") >= at  # when due, not before


async def test_a_claim_ahead_that_fails_is_logged_and_the_fire_is_claimed_when_due(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class FailsOnce(FileBackend):
        failed = False

        async def claim(self, lease: Any, fires: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise RuntimeError("a bug in a claim")
            return await super().claim(lease, fires)

    coordinator = lone_coordinator(FailsOnce("claimahead", directory=str(tmp_path)))
    await coordinator.start()
    try:
        at = datetime.now(timezone.utc)
        coordinator.reserve([Fire("j", at)])
        await wait_until(lambda: "Claiming 1 fire(s) ahead of their time failed" in caplog.text)
        due = Fire("j", at)
        assert list(await coordinator.admit([due])) == [due]
    finally:
        await coordinator.stop()
