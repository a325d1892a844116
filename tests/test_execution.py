"""Jobs run with the app context: coroutines on the loop, plain functions in bounded threads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from quart import (
    Quart,
    copy_current_app_context,
    current_app,
    g,
    has_request_context,
    request,
    url_for,
)
from quart.ctx import AppContext
from quart.globals import _cv_app

from quart_sched import APScheduler, JobLookupError, SchedulerNotRunningError, current_run
from quart_sched.errors import MaxInstancesReachedError

from support import wait_until


async def test_async_job_runs_on_serving_loop_with_current_app(
    app: Quart, scheduler: APScheduler
) -> None:
    seen: list[tuple[str, asyncio.AbstractEventLoop]] = []

    async def job() -> None:
        seen.append((current_app.name, asyncio.get_running_loop()))

    scheduler.add_job("async", job, trigger="interval", seconds=0.05)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) >= 2)
        loop = asyncio.get_running_loop()
    assert all(name == app.name for name, _ in seen)
    assert all(job_loop is loop for _, job_loop in seen)


async def test_plain_job_runs_in_a_thread_with_current_app(
    app: Quart, scheduler: APScheduler
) -> None:
    seen: list[tuple[str, str]] = []

    def job(tag: str) -> None:
        seen.append((f"{current_app.name}:{tag}", threading.current_thread().name))

    scheduler.add_job("sync", job, trigger="interval", seconds=0.05, args=["x"])
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) >= 2)
    assert seen[0][0] == f"{app.name}:x"
    assert seen[0][1] != threading.main_thread().name
    assert seen[0][1].startswith("quart_sched-default")


async def test_each_run_gets_a_fresh_app_context(app: Quart, scheduler: APScheduler) -> None:
    seen: list[object] = []
    torn_down: list[object] = []

    @app.teardown_appcontext
    async def teardown(exc: BaseException | None) -> None:
        torn_down.append(exc)

    async def job() -> None:
        seen.append(g.get("marker"))
        g.marker = "left over"

    scheduler.add_job("fresh", job, trigger="interval", seconds=0.05)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) >= 3)
    assert seen[:3] == [None, None, None]
    assert len(torn_down) >= 3


async def test_plain_jobs_do_not_block_the_loop(app: Quart, scheduler: APScheduler) -> None:
    block = 0.6
    started = threading.Event()
    finished = threading.Event()
    gaps: list[float] = []

    def blocking() -> None:
        started.set()
        time.sleep(block)  # on the loop's thread, this would stall every coroutine
        finished.set()

    async def ticker() -> None:
        # The loop's lag: how late a 10 ms sleep wakes up, from before the job starts
        # until after it ends.
        last = time.monotonic()
        while not finished.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    scheduler.add_job("blocking", blocking, trigger="date")
    async with app.test_app():
        tick = asyncio.create_task(ticker())
        scheduler.start()
        await wait_until(started.is_set)
        await asyncio.wait_for(tick, timeout=5)
    assert len(gaps) > 10, gaps
    assert max(gaps) < block / 2, f"the loop stalled {max(gaps):.3f} s while the job blocked"


async def test_threadpool_max_workers_bounds_concurrent_plain_jobs(app: Quart) -> None:
    app.config["SCHEDULER_EXECUTORS"] = {"default": {"type": "threadpool", "max_workers": 2}}
    scheduler = APScheduler(app=app)
    lock = threading.Lock()
    running = 0
    peak = 0
    done: list[int] = []

    def job(n: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
            done.append(n)

    for n in range(6):
        scheduler.add_job(f"job{n}", job, trigger="date", args=[n])
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(done) == 6)
    assert peak == 2


async def test_coroutine_job_is_awaited_even_under_a_threadpool_executor(app: Quart) -> None:
    app.config["SCHEDULER_EXECUTORS"] = {"default": {"type": "threadpool", "max_workers": 20}}
    scheduler = APScheduler(app=app)
    loop_ids: list[int] = []

    async def job() -> None:
        await asyncio.sleep(0)
        loop_ids.append(id(asyncio.get_running_loop()))

    scheduler.add_job("coro", job, trigger="interval", seconds=0.05)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(loop_ids) >= 2)
        assert loop_ids[0] == id(asyncio.get_running_loop())


async def test_plain_function_returning_a_coroutine_is_awaited(
    app: Quart, scheduler: APScheduler
) -> None:
    ran: list[str] = []

    async def inner() -> str:
        ran.append(f"{current_app.name}:{current_run.job_id}")
        return "ok"

    class Caller:
        def __call__(self) -> Any:
            return inner()

    scheduler.add_job("returns-coro", Caller(), trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: ran == [f"{app.name}:returns-coro"])


async def test_run_job_runs_now_through_the_executor(app: Quart, scheduler: APScheduler) -> None:
    async def job(x: int) -> int:
        return x * 2 if current_app else -1

    scheduler.add_job("later", job, trigger="interval", hours=1, args=[21])
    scheduler.start()
    async with app.test_app():
        assert await scheduler.run_job("later") == 42
        with pytest.raises(JobLookupError):
            scheduler.run_job("nope")


async def test_run_job_reraises_the_job_error(app: Quart, scheduler: APScheduler) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    scheduler.add_job("broken", broken, trigger="interval", hours=1)
    scheduler.start()
    async with app.test_app():
        with pytest.raises(RuntimeError, match="boom"):
            await scheduler.run_job("broken")


async def test_run_job_needs_a_running_scheduler(scheduler: APScheduler) -> None:
    scheduler.add_job("x", print, trigger="interval", hours=1)
    with pytest.raises(SchedulerNotRunningError):
        scheduler.run_job("x")


async def test_run_job_from_a_sync_view_runs_the_job_and_can_be_waited_on(
    app: Quart, scheduler: APScheduler
) -> None:
    # Quart runs a plain `def` view in a worker thread, where there is no running loop:
    # run_job used to fail there with a bare "no running event loop".
    ran: list[tuple[str, str, bool]] = []
    views: list[str] = []
    gate = threading.Event()

    async def coro_job(tag: str) -> str:
        loop_thread = threading.current_thread() is threading.main_thread()
        ran.append((tag, current_app.name, loop_thread))
        return f"{tag} by {current_app.name}"

    def plain_job(tag: str) -> str:
        gate.wait(10)
        ran.append((tag, current_app.name, threading.current_thread() is threading.main_thread()))
        return tag

    def broken() -> None:
        raise RuntimeError("boom from a sync view")

    @app.post("/run/<job_id>")
    def run_view(job_id: str) -> Any:
        views.append(threading.current_thread().name)
        wait = request.args.get("wait", "yes") == "yes"
        try:
            future = scheduler.run_job(job_id)
        except MaxInstancesReachedError:
            return {"error": "max_instances"}, 409
        if not wait:
            return {"started": True}, 202
        try:
            return {"result": future.result(timeout=10)}
        except RuntimeError as exc:
            return {"error": str(exc)}, 500

    scheduler.add_job("coro", coro_job, trigger="interval", hours=1, args=["c"])
    scheduler.add_job("plain", plain_job, trigger="interval", hours=1, args=["p"])
    scheduler.add_job("broken", broken, trigger="interval", hours=1)
    scheduler.start()
    async with app.test_app():
        client = app.test_client()
        response = await client.post("/run/coro")
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert await response.get_json() == {"result": f"c by {app.name}"}
        assert ran == [("c", app.name, True)]  # on the serving loop, with the app context
        assert views and views[0] != threading.main_thread().name  # the view ran in a thread

        # A plain job runs in the pool; max_instances is answered in the view's thread.
        response = await client.post("/run/plain?wait=no")
        assert response.status_code == 202
        response = await client.post("/run/plain?wait=no")
        assert response.status_code == 409
        gate.set()
        await wait_until(lambda: ("p", app.name, False) in ran)

        response = await client.post("/run/broken")
        assert response.status_code == 500
        assert await response.get_json() == {"error": "boom from a sync view"}

        scheduler.shutdown()
        with pytest.raises(SchedulerNotRunningError):
            await asyncio.to_thread(scheduler.run_job, "coro")


async def test_max_instances_is_honoured(app: Quart) -> None:
    app.config["SCHEDULER_JOB_DEFAULTS"] = {"max_instances": 1, "coalesce": True}
    scheduler = APScheduler(app=app)
    release = asyncio.Event()
    concurrent = 0
    peak = 0

    async def slow() -> None:
        nonlocal concurrent, peak
        concurrent += 1
        peak = max(peak, concurrent)
        await release.wait()
        concurrent -= 1

    skipped: list[str] = []
    from quart_sched.signals import job_skipped

    def on_skip(sender: Quart, job_id: str, **extra: Any) -> None:
        skipped.append(job_id)

    with job_skipped.connected_to(on_skip):
        scheduler.add_job("slow", slow, trigger="interval", seconds=0.05)
        scheduler.start()
        async with app.test_app():
            await wait_until(lambda: len(skipped) >= 2)
            release.set()
    assert peak == 1
    assert set(skipped) == {"slow"}


async def test_fire_and_forget_run_job_failure_is_logged_once(
    app: Quart, scheduler: APScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import logging

    def broken() -> None:
        raise RuntimeError("boom")

    scheduler.add_job("broken", broken, trigger="interval", hours=1)
    scheduler.start()
    async with app.test_app():
        with caplog.at_level(logging.ERROR):
            future = scheduler.run_job("broken")
            await wait_until(future.done)
            del future
            gc.collect()
            await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_app_context_signals_and_teardowns_run_when_registered(
    app: Quart, scheduler: APScheduler
) -> None:
    """Without listeners a run's context skips Quart's signal sends; with them, they fire."""
    from quart.signals import appcontext_popped, appcontext_pushed

    pushed: list[str] = []
    popped: list[str] = []
    ran: list[str] = []

    async def job() -> None:
        ran.append(current_app.name)

    def on_pushed(sender: Quart, **kw: Any) -> None:
        pushed.append(sender.name)

    def on_popped(sender: Quart, **kw: Any) -> None:
        popped.append(sender.name)

    scheduler.add_job("j", job, trigger="interval", seconds=0.05)
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(ran) >= 2)  # the quiet path: current_app works
        with appcontext_pushed.connected_to(on_pushed), appcontext_popped.connected_to(on_popped):
            count = len(ran)
            await wait_until(lambda: len(ran) >= count + 2 and len(popped) >= 2)
    assert set(pushed) == {app.name} and set(popped) == {app.name}


async def test_jobs_added_or_run_from_a_request_never_see_that_request(app: Quart) -> None:
    """Each run starts in a context of its own: the request that added the job (and woke
    the scheduler), or ran it now, is not visible inside the job."""
    app.config.update(SCHEDULER_HISTORY=False, SCHEDULER_COORDINATION=False)
    scheduler = APScheduler(app=app)
    seen: list[tuple[str, bool, str]] = []

    async def coroutine(tag: str) -> None:
        seen.append((tag, has_request_context(), current_app.name))

    def plain(tag: str) -> None:
        seen.append((tag, has_request_context(), current_app.name))

    @app.post("/add")
    async def add() -> str:
        scheduler.add_job("c", coroutine, trigger="date", args=["added async"])
        scheduler.add_job("p", plain, trigger="date", args=["added plain"])
        return "ok"

    @app.post("/now")
    async def now() -> str:
        scheduler.add_job("later", coroutine, trigger="interval", hours=1, args=["run now"])
        await scheduler.run_job("later")
        return "ok"

    scheduler.start()
    async with app.test_app():
        client = app.test_client()
        assert (await client.post("/add")).status_code == 200
        await wait_until(lambda: len(seen) == 2)
        assert (await client.post("/now")).status_code == 200
        await wait_until(lambda: len(seen) == 3)
    assert sorted(seen) == [
        ("added async", False, app.name),
        ("added plain", False, app.name),
        ("run now", False, app.name),
    ]


@pytest.mark.parametrize("kind", ["async", "plain"])
async def test_a_run_app_context_is_a_whole_one(kind: str) -> None:
    """url_for with SERVER_NAME, g, copy_current_app_context: as in Quart's own context."""
    app = Quart("whole_context")
    app.config.update(
        SERVER_NAME="jobs.example", SCHEDULER_HISTORY=False, SCHEDULER_COORDINATION=False
    )
    scheduler = APScheduler(app=app)
    seen: list[tuple[str, str, str]] = []

    @app.get("/report/<int:number>")
    async def report(number: int) -> str:
        return str(number)

    def record() -> None:
        g.setdefault("tag", kind)

        @copy_current_app_context
        async def copied() -> str:
            return str(g.tag)

        seen.append((url_for("report", number=7, _external=True), g.tag, copied.__name__))

    async def coroutine() -> None:
        record()

    scheduler.add_job("whole", coroutine if kind == "async" else record, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) == 1)
    assert seen == [("http://jobs.example/report/7", kind, "copied")]


async def test_an_app_class_with_its_own_app_context_gets_it_for_runs() -> None:
    class MyContext(AppContext):
        pass

    class MyQuart(Quart):
        def app_context(self) -> AppContext:
            return MyContext(self)

    app = MyQuart("own_context")
    app.config.update(SCHEDULER_HISTORY=False, SCHEDULER_COORDINATION=False)
    scheduler = APScheduler(app=app)
    seen: list[str] = []

    async def coroutine() -> None:
        seen.append(type(_cv_app.get()).__name__)

    def plain() -> None:
        seen.append(type(_cv_app.get()).__name__)

    scheduler.add_job("a", coroutine, trigger="date")
    scheduler.add_job("p", plain, trigger="date")
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(seen) == 2)
    assert seen == ["MyContext", "MyContext"]
