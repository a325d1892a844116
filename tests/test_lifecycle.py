"""start/stop on the serving loop: deferral, state right after each call, restarts, many apps."""

from __future__ import annotations

import asyncio
import threading
from datetime import timezone
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from quart import Quart, current_app

from quart_sched import (
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STOPPED,
    APScheduler,
    SchedulerAlreadyRunningError,
    SchedulerNotRunningError,
)

from support import wait_until


def test_start_without_a_loop_waits_for_serving(app: Quart, scheduler: APScheduler) -> None:
    fired: list[str] = []

    async def job() -> None:
        fired.append(current_app.name)

    scheduler.add_job("j", job, trigger="interval", seconds=0.05)
    scheduler.start()  # module import time: no running loop
    assert scheduler.state == STATE_STOPPED

    async def serve() -> None:
        async with app.test_app():
            assert scheduler.state == STATE_RUNNING
            assert scheduler.scheduler._eventloop is asyncio.get_running_loop()
            await wait_until(lambda: len(fired) >= 1)
        assert scheduler.state == STATE_STOPPED

    asyncio.run(serve())
    assert fired[0] == app.name


def test_serving_again_on_a_new_loop_starts_again(app: Quart, scheduler: APScheduler) -> None:
    fired: list[asyncio.AbstractEventLoop] = []

    async def job() -> None:
        fired.append(asyncio.get_running_loop())

    scheduler.add_job("j", job, trigger="interval", seconds=0.05)
    scheduler.start()

    async def serve() -> asyncio.AbstractEventLoop:
        fired.clear()
        async with app.test_app():
            await wait_until(lambda: len(fired) >= 1)
        return asyncio.get_running_loop()

    first = asyncio.run(serve())
    second = asyncio.run(serve())  # app.run() makes a new loop each time, so do we
    assert first is not second
    assert fired[-1] is second


async def test_start_inside_a_running_loop_is_immediate(scheduler: APScheduler) -> None:
    scheduler.start()
    assert scheduler.state == STATE_RUNNING
    assert scheduler.running
    scheduler.pause()
    assert scheduler.state == STATE_PAUSED
    assert scheduler.running
    scheduler.resume()
    assert scheduler.state == STATE_RUNNING
    scheduler.shutdown()
    assert scheduler.state == STATE_STOPPED
    assert not scheduler.running


async def test_start_paused_runs_nothing_until_resumed(app: Quart, scheduler: APScheduler) -> None:
    fired: list[int] = []
    scheduler.add_job("j", lambda: fired.append(1), trigger="interval", seconds=0.02)
    scheduler.start(paused=True)
    async with app.test_app():
        assert scheduler.state == STATE_PAUSED
        await asyncio.sleep(0.1)
        assert fired == []
        scheduler.resume()
        await wait_until(lambda: fired)


def test_start_paused_before_serving_starts_paused(app: Quart, scheduler: APScheduler) -> None:
    fired: list[int] = []
    scheduler.add_job("j", lambda: fired.append(1), trigger="interval", seconds=0.02)
    scheduler.start(paused=True)  # no loop yet: the start waits for serving, paused

    async def serve() -> None:
        async with app.test_app():
            assert scheduler.state == STATE_PAUSED
            await asyncio.sleep(0.1)
            assert fired == []
            scheduler.resume()
            await wait_until(lambda: fired)

    asyncio.run(serve())


def test_serving_again_restarts_the_scheduler_paused_as_it_was(
    app: Quart, scheduler: APScheduler
) -> None:
    fired: list[int] = []
    scheduler.add_job("j", lambda: fired.append(1), trigger="interval", seconds=0.02)
    scheduler.start()

    async def serve_and_pause() -> None:
        async with app.test_app():
            assert scheduler.state == STATE_RUNNING
            await wait_until(lambda: fired)
            scheduler.pause()

    async def serve_again() -> None:
        async with app.test_app():
            assert scheduler.state == STATE_PAUSED
            count = len(fired)
            await asyncio.sleep(0.1)
            assert len(fired) == count

    asyncio.run(serve_and_pause())
    asyncio.run(serve_again())


async def test_start_twice_is_an_error(scheduler: APScheduler) -> None:
    scheduler.start()
    with pytest.raises(SchedulerAlreadyRunningError):
        scheduler.start()


def test_start_twice_before_serving_is_an_error(scheduler: APScheduler) -> None:
    scheduler.start()
    with pytest.raises(SchedulerAlreadyRunningError):
        scheduler.start()


def test_shutdown_cancels_a_start_waiting_for_serving(app: Quart, scheduler: APScheduler) -> None:
    scheduler.start()
    scheduler.shutdown()

    async def serve() -> None:
        async with app.test_app():
            assert scheduler.state == STATE_STOPPED

    asyncio.run(serve())
    with pytest.raises(SchedulerNotRunningError):
        scheduler.shutdown()


async def test_stop_then_start_again_in_the_same_loop(app: Quart, scheduler: APScheduler) -> None:
    fired: list[int] = []

    async def job() -> None:
        fired.append(1)

    scheduler.add_job("j", job, trigger="interval", seconds=0.05)
    for _ in range(3):
        scheduler.start()
        await wait_until(lambda: fired)
        scheduler.shutdown()
        assert scheduler.state == STATE_STOPPED
        fired.clear()
    await scheduler.scheduler.aclose()


async def test_shutdown_from_a_job_thread_changes_state_before_returning(
    app: Quart, scheduler: APScheduler
) -> None:
    states: list[int] = []

    def stopper() -> None:
        current_app.extensions["apscheduler"].shutdown(wait=False)
        states.append(current_app.extensions["apscheduler"].state)

    scheduler.add_job("stopper", stopper, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: states)
    assert states == [STATE_STOPPED]


async def test_shutdown_from_a_coroutine_job(app: Quart, scheduler: APScheduler) -> None:
    states: list[int] = []

    async def stopper() -> None:
        ext = current_app.extensions["apscheduler"]
        ext.shutdown()
        states.append(ext.state)

    scheduler.add_job("stopper", stopper, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: states)
    assert states == [STATE_STOPPED]


def test_extension_is_registered_on_the_app(app: Quart, scheduler: APScheduler) -> None:
    assert app.extensions["apscheduler"] is scheduler
    assert app.apscheduler is scheduler  # type: ignore[attr-defined]
    assert scheduler.app is app


def test_registering_twice_on_one_app_says_what_to_do(app: Quart, scheduler: APScheduler) -> None:
    with pytest.raises(RuntimeError, match=r"app.extensions\['apscheduler'\]"):
        APScheduler(app=app)


def test_app_factory_reuses_one_extension(tmp_path: Any) -> None:
    ext = APScheduler()
    fired: list[str] = []

    def create_app(name: str) -> Quart:
        app = Quart(name)
        app.config["SCHEDULER_JOBS"] = [
            {"id": "tick", "func": "test_lifecycle:record", "trigger": "interval", "seconds": 0.05}
        ]
        ext.init_app(app)
        ext.start()
        return app

    async def serve(app: Quart) -> None:
        async with app.test_app():
            await wait_until(lambda: app.name in fired)

    _records.append(fired)
    try:
        for name in ("factory_one", "factory_two"):
            asyncio.run(serve(create_app(name)))
    finally:
        _records.remove(fired)
    assert [j.id for j in ext.get_jobs()] == ["tick"]


_records: list[list[str]] = []


def record() -> None:
    for sink in _records:
        sink.append(current_app.name)


async def test_two_apps_in_one_process_each_see_their_own_app() -> None:
    apps = [Quart("first_app"), Quart("second_app")]
    seen: dict[str, set[str]] = {"first": set(), "second": set()}
    exts = []
    for app, key in zip(apps, seen, strict=True):
        ext = APScheduler(app=app)

        async def job(key: str = key) -> None:
            seen[key].add(current_app.name)

        ext.add_job("same-id", job, trigger="interval", seconds=0.05)
        ext.start()
        exts.append(ext)
    async with apps[0].test_app(), apps[1].test_app():
        await wait_until(lambda: all(seen.values()))
    assert seen == {"first": {"first_app"}, "second": {"second_app"}}
    assert all(ext.state == STATE_STOPPED for ext in exts)


async def test_running_extension_refuses_a_second_app(app: Quart, scheduler: APScheduler) -> None:
    scheduler.start()
    with pytest.raises(RuntimeError, match="Shut it down first"):
        scheduler.init_app(Quart("other"))


def test_prebuilt_asyncio_scheduler_keeps_its_settings(app: Quart) -> None:
    base = AsyncIOScheduler(timezone=timezone.utc, job_defaults={"max_instances": 3})
    ext = APScheduler(scheduler=base, app=app)
    assert ext.scheduler is base
    assert ext.scheduler.timezone == timezone.utc
    job = ext.add_job("j", print, trigger="interval", seconds=5)
    assert ext.scheduler._job_defaults["max_instances"] == 3
    assert job.trigger.timezone == timezone.utc


def test_prebuilt_background_scheduler_is_refused_with_advice() -> None:
    with pytest.raises(TypeError, match="AsyncIOScheduler"):
        APScheduler(scheduler=BackgroundScheduler())


@pytest.mark.parametrize(
    ("hosts", "starts"),
    [(["*"], True), (["HOST"], True), (["not-this-host"], False), ([], False)],
)
async def test_allowed_hosts_decide_who_runs_jobs(
    app: Quart, hosts: list[str], starts: bool
) -> None:
    app.config["SCHEDULER_ALLOWED_HOSTS"] = [
        h.replace("HOST", APScheduler().host_name) for h in hosts
    ]
    ext = APScheduler(app=app)
    ext.start()
    assert ext.running is starts
    if starts:
        ext.shutdown()


async def test_pending_jobs_are_listed_before_start(scheduler: APScheduler) -> None:
    scheduler.add_job("a", print, trigger="interval", seconds=1)
    assert [job.id for job in scheduler.get_jobs()] == ["a"]
    assert scheduler.get_job("a") is not None
    scheduler.remove_job("a")
    assert scheduler.get_jobs() == []


def _count_threads() -> int:
    return sum(t.name.startswith("quart_sched") for t in threading.enumerate())


def test_start_in_a_users_before_serving_hook_works_on_every_serve(
    app: Quart, scheduler: APScheduler
) -> None:
    fired: list[int] = []

    async def job() -> None:
        fired.append(1)

    scheduler.add_job("j", job, trigger="interval", seconds=0.05)

    @app.before_serving
    async def start_scheduler() -> None:
        scheduler.start()  # inside the serving loop: starts at once, the user's to repeat

    async def serve() -> None:
        fired.clear()
        async with app.test_app():
            await wait_until(lambda: fired)

    asyncio.run(serve())
    asyncio.run(serve())
    assert scheduler.state == STATE_STOPPED


def test_factory_apps_built_without_serving_do_not_trip_over_each_other() -> None:
    ext = APScheduler()
    fired: list[str] = []

    async def job() -> None:
        fired.append(current_app.name)

    ext.add_job("j", job, trigger="interval", seconds=0.05)

    def create_app(name: str) -> Quart:
        app = Quart(name)
        ext.init_app(app)
        ext.start()  # no loop: due when this app serves
        return app

    create_app("built_not_served")
    served = create_app("built_and_served")

    async def serve() -> None:
        async with served.test_app():
            await wait_until(lambda: fired)

    asyncio.run(serve())
    assert set(fired) == {"built_and_served"}


def test_a_started_scheduler_keeps_nothing_per_job_for_pending_jobs(
    app: Quart, scheduler: APScheduler
) -> None:
    """What add_job keeps for a pending job (its index entry, the spec to rebuild its
    trigger in another zone) goes at start: for 100,000 jobs it was 13 MiB, held for
    nothing. Serving again finds the jobs pending again, with their index."""

    async def job() -> None:
        pass

    for i in range(100):
        scheduler.add_job(f"j{i}", job, trigger="interval", seconds=60)
    inner = scheduler.scheduler
    assert len(inner._pending_index) == 100 and len(inner._retime) == 100

    async def serve() -> None:
        async with app.test_app():
            scheduler.start()
            assert scheduler.state == STATE_RUNNING
            assert inner._pending_index == {} and inner._retime == {}
            assert len(scheduler.get_jobs()) == 100

    asyncio.run(serve())
    assert len(inner._pending_index) == 100  # stopped: pending again
    asyncio.run(serve())
