"""Execution: ``async def`` jobs on the serving loop, plain functions in a bounded thread
pool, each run in a fresh app context, every outcome reported."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import sys
import time
import traceback
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.util import iscoroutinefunction_partial
from quart import Quart
from quart.ctx import AppContext
from quart.signals import appcontext_popped, appcontext_pushed, appcontext_tearing_down

try:  # the variable behind current_app; without it, every run takes Quart's full push
    from quart.globals import _cv_app
except ImportError:  # pragma: no cover - a Quart that moved it
    _cv_app = None  # type: ignore[assignment]

from .. import signals
from .._current import set_current_run
from .._history import run_record
from ..errors import (
    ConfigurationError,
    SchedulerNotRunningError,
)

if TYPE_CHECKING:
    from .scheduler import QuartScheduler

from .reporting import CANCEL_GRACE
from .workers import Workers

logger = logging.getLogger("quart_sched")

DEFAULT_MAX_WORKERS = 10
_NO_EVENTS: list[JobExecutionEvent] = []  # never appended to


@dataclass
class Batch:
    """What one start of an executor owns; a shutdown drains it while a restart goes on."""

    loop: asyncio.AbstractEventLoop
    pool: Workers
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Plain runs handed to the pool and not reported back yet (see :class:`PlainRun`).
    plain: set[PlainRun] = field(default_factory=set)
    #: Set by the delivery that empties ``plain`` while a drain waits for it.
    idle: asyncio.Future[None] | None = None


class QuartExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs ``async def`` jobs on the serving loop and plain functions in a thread pool.

    Each run starts in a context of its own, empty but for a fresh app context and
    ``current_run``: nothing of the code that added or woke the job (a request) is
    carried into it. ``max_workers`` bounds the threads. Configured
    ``threadpool`` and ``asyncio`` executors are replaced by this one, keeping their size.
    """

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS, pool_kwargs: Any = None) -> None:
        super().__init__()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self._pool_kwargs = dict(pool_kwargs or {})
        unknown = set(self._pool_kwargs) - {"initializer", "initargs"}
        if unknown:
            raise ConfigurationError(
                "pool_kwargs takes initializer and initargs only, got "
                + ", ".join(sorted(unknown))
            )
        self._batch: Batch | None = None

    # APScheduler's executor interface ------------------------------------------------

    def start(self, scheduler: QuartScheduler, alias: str) -> None:
        super().start(scheduler, alias)
        assert scheduler._eventloop is not None, "start the scheduler on a running loop"
        loop = scheduler._eventloop
        batch = Batch(loop=loop, pool=Workers(loop, self.max_workers, f"quart_sched-{alias}"))
        batch.pool.configure(self._pool_kwargs)
        self._batch = batch

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs. Running ones are left to :meth:`drain`, never cancelled here."""
        batch, self._batch = self._batch, None
        if batch is not None and not wait:
            batch.pool.shutdown(wait=False)

    # ours ---------------------------------------------------------------------------

    def detach(self) -> Batch | None:
        """Take the running batch away from this executor, for the caller to drain."""
        batch, self._batch = self._batch, None
        return batch

    def submit_now(self, job: Job) -> asyncio.Task[list[JobExecutionEvent]]:
        """Run ``job`` once now, honouring ``max_instances``; the task yields its events."""
        assert self._lock is not None, "this executor has not been started"
        with self._lock:
            if self._instances[job.id] >= job.max_instances:
                raise MaxInstancesReachedError(job)
            task = self._submit(job, [datetime.now(timezone.utc)], check_misfire=False)
            self._instances[job.id] += 1
        return task

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        batch = self._batch
        if batch is None:
            raise SchedulerNotRunningError
        if len(run_times) == 1 and asyncio._get_running_loop() is batch.loop:
            app = self._scheduler.app
            if _quiet_app(app) and not self._missed(job, run_times[0]):
                if is_coroutine_function(job.func):
                    self._start_coroutine(batch, job, run_times[0], app)
                else:
                    self._submit_plain(batch, job, run_times[0], app)
                return
        self._submit(job, run_times, check_misfire=True)

    def _missed(self, job: Job, run_time: datetime) -> bool:
        grace = job.misfire_grace_time
        return grace is not None and time.time() - run_time.timestamp() > grace

    # The plain-function path. No task, no await: the run is handed to a pool thread,
    # which sets the app context itself (in the run's own, empty, context), calls the
    # function and hands the run back; the loop then records
    # and reports it, for all the runs that came back meanwhile in one callback. Taken
    # when nothing needs the loop during the run: one run time, no misfire to report, and
    # an app context that needs no signal sends or teardown functions (Quart's own push
    # and pop are coroutines). Everything else takes the task path below.

    def _submit_plain(self, batch: Batch, job: Job, run_time: datetime, app: Any) -> None:
        history = self._scheduler.history
        run = PlainRun(self, batch, job, run_time, app, contextvars.Context())
        if _debug():
            logger.debug("Running job %r (scheduled at %s)", job.id, run_time)
        if history is not None:
            run.run_id = history.started(job.id, run_time)
        run.context.run(set_current_run, job.id, run_time, run.run_id)  # type: ignore[union-attr]
        batch.plain.add(run)
        batch.pool.submit(run)

    # The coroutine path, on the same terms: the job's coroutine is the task (created in
    # an empty context holding the run's app context), and a done callback
    # records and reports it; no wrapping coroutine, no await on the way back.

    def _start_coroutine(self, batch: Batch, job: Job, run_time: datetime, app: Any) -> None:
        history = self._scheduler.history
        run = PlainRun(self, batch, job, run_time, app, None)
        if _debug():
            logger.debug("Running job %r (scheduled at %s)", job.id, run_time)
        if history is not None:
            run.run_id = history.started(job.id, run_time)
        context = contextvars.Context()
        try:
            task = context.run(
                _create_job_task, batch.loop, context, app, job, run_time, run.run_id
            )
        except Exception as exc:  # calling the function failed (its arguments, say)
            run.error = exc
            run.traceback = "".join(traceback.format_tb(exc.__traceback__))
            del exc
            # Soon, not now: the submission counts this instance once this returns.
            batch.loop.call_soon(self._complete, batch, run)
            return
        batch.tasks.add(task)
        task.add_done_callback(run.task_done)

    def _coroutine_done(self, batch: Batch, run: PlainRun, task: asyncio.Task[Any]) -> None:
        batch.tasks.discard(task)
        if task.cancelled():  # still running when a drain gave up on it
            self._interrupted_now(batch, run)
            return
        exc = task.exception()
        if exc is None:
            run.retval = task.result()
        else:
            run.error = exc
            run.traceback = "".join(traceback.format_tb(exc.__traceback__))
            del exc
        self._complete(batch, run)

    def _interrupted_now(self, batch: Batch, run: PlainRun) -> None:
        job, run_time = run.job, run.run_time
        logger.warning(
            "Job %r (scheduled at %s) was interrupted: still running when the scheduler shut down",
            job.id,
            run_time.isoformat(),
        )
        history = self._scheduler.history
        row = None
        if history is not None and run.run_id is not None:
            row = history.finished(run.run_id, "interrupted")
        if signals.job_interrupted.receivers or (row and signals.run_finished.receivers):
            task = batch.loop.create_task(self._report_interrupted(job.id, run_time, row))
            batch.tasks.add(task)
            task.add_done_callback(batch.tasks.discard)
        self._run_job_success(job.id, [])

    async def _report_interrupted(
        self, job_id: str, run_time: datetime, row: tuple[Any, ...] | None
    ) -> None:
        scheduler: QuartScheduler = self._scheduler
        await scheduler.report(signals.job_interrupted, job_id, run_time)
        if row is not None and signals.run_finished.receivers:
            await scheduler.report(signals.run_finished, job_id, run_time, run=run_record(row))

    def _finish_plain(self, batch: Batch, run: PlainRun) -> None:
        """On the loop: a plain run came back from its thread."""
        if run not in batch.plain:
            return  # interrupted at shutdown: already reported
        batch.plain.discard(run)
        if run.cancelled:  # dropped from the pool's queue without a loop to report to
            self._record_interrupted_now(run)
        else:
            self._complete(batch, run)
        if not batch.plain and batch.idle is not None and not batch.idle.done():
            batch.idle.set_result(None)

    def _complete(self, batch: Batch, run: PlainRun) -> None:
        """A run of the thread or coroutine path ended: record it, tell the listeners."""
        if inspect.isawaitable(run.retval) or (
            signals.job_executed.receivers
            or signals.job_failed.receivers
            or signals.run_finished.receivers
        ):
            # Someone listens (or the function returned a coroutine to await): report in
            # a task, in the order the task path does.
            task = batch.loop.create_task(self._report_plain(batch, run))
            batch.tasks.add(task)
            task.add_done_callback(batch.tasks.discard)
        else:
            event = self._plain_outcome(run, self._scheduler.listened())[0]
            self._run_job_success(run.job.id, _NO_EVENTS if event is None else [event])

    def _plain_outcome(
        self, run: PlainRun, listened: bool = True
    ) -> tuple[JobExecutionEvent | None, tuple[Any, ...] | None]:
        """Log and record a finished plain run (no signals): its event for the listeners
        (None when nothing listens), and its history row (None: not recorded)."""
        job, run_time = run.job, run.run_time
        history = self._scheduler.history
        recorded = history is not None and run.run_id is not None
        exc = run.error
        if exc is None:
            if _debug():
                logger.debug("Job %r (scheduled at %s) executed", job.id, run_time)
            row = history.finished(run.run_id, "success") if recorded else None
            if not listened:
                return None, row
            return JobExecutionEvent(
                EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_time, retval=run.retval
            ), row
        run.error = None
        _log_failure(job, run_time, exc)
        row = (
            history.finished(run.run_id, "error", error=exc, traceback=run.traceback)
            if recorded
            else None
        )
        if not listened:
            return None, row
        return JobExecutionEvent(
            EVENT_JOB_ERROR,
            job.id,
            job._jobstore_alias,
            run_time,
            exception=exc,
            traceback=run.traceback,
        ), row

    async def _report_plain(self, batch: Batch, run: PlainRun) -> None:
        scheduler: QuartScheduler = self._scheduler
        job, run_time = run.job, run.run_time
        events: list[JobExecutionEvent] = []
        try:
            if run.error is None and inspect.isawaitable(run.retval):
                # A plain function that returned a coroutine: await it here, never drop it
                # (this task's own context: the run's app context and current_run, again).
                set_current_run(job.id, run_time, run.run_id)
                try:
                    async with _run_context(scheduler.app):
                        run.retval = await run.retval
                except asyncio.CancelledError:
                    await self._interrupted(run.run_id, job, run_time)
                    raise
                except Exception as exc:
                    run.error = exc
                    run.traceback = "".join(traceback.format_tb(exc.__traceback__))
                    del exc
            error = run.error
            if error is None:
                await scheduler.report(signals.job_executed, job.id, run_time, retval=run.retval)
            else:
                await scheduler.report(
                    signals.job_failed,
                    job.id,
                    run_time,
                    exception=error,
                    traceback=run.traceback,
                )
            del error
            event, row = self._plain_outcome(run)
            if row is not None and signals.run_finished.receivers:
                await scheduler.report(signals.run_finished, job.id, run_time, run=run_record(row))
            if event is not None:
                events.append(event)
        finally:
            self._run_job_success(job.id, events)

    async def interrupt_plain(self, batch: Batch, run: PlainRun) -> None:
        """A plain run still going when the drain gave up: report it interrupted now (its
        thread cannot be stopped; what it returns later is ignored)."""
        batch.plain.discard(run)
        run.cancelled = True
        try:
            await self._interrupted(run.run_id, run.job, run.run_time)
        finally:
            self._run_job_success(run.job.id, [])

    async def _interrupted(self, run_id: str | None, job: Job, run_time: datetime) -> None:
        scheduler: QuartScheduler = self._scheduler
        logger.warning(
            "Job %r (scheduled at %s) was interrupted: still running when the scheduler shut down",
            job.id,
            run_time.isoformat(),
        )
        await asyncio.shield(scheduler.report(signals.job_interrupted, job.id, run_time))
        await asyncio.shield(scheduler.record_finished(run_id, job.id, run_time, "interrupted"))

    def _record_interrupted_now(self, run: PlainRun) -> None:
        history = self._scheduler.history
        if history is not None and run.run_id is not None:
            history.finished(run.run_id, "interrupted")
        self._run_job_success(run.job.id, [])

    def _submit(
        self, job: Job, run_times: list[datetime], *, check_misfire: bool
    ) -> asyncio.Task[list[JobExecutionEvent]]:
        batch = self._batch
        if batch is None:
            raise SchedulerNotRunningError
        # In a context of its own, as on the fast paths: not the caller's (a request's).
        run = self._run(batch, job, run_times, check_misfire)
        task = contextvars.Context().run(batch.loop.create_task, run)
        batch.tasks.add(task)
        task.add_done_callback(batch.tasks.discard)
        return task

    async def _run(
        self, batch: Batch, job: Job, run_times: list[datetime], check_misfire: bool
    ) -> list[JobExecutionEvent]:
        events: list[JobExecutionEvent] = []
        scheduler: QuartScheduler = self._scheduler
        alias = job._jobstore_alias
        try:
            for run_time in run_times:
                if check_misfire and job.misfire_grace_time is not None:
                    late = datetime.now(timezone.utc) - run_time
                    if late.total_seconds() > job.misfire_grace_time:
                        logger.warning(
                            "Run of job %r scheduled at %s was missed by %s",
                            job.id,
                            run_time.isoformat(),
                            late,
                        )
                        events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
                        await scheduler.report(signals.job_missed, job.id, run_time)
                        await scheduler.record_not_run(job.id, run_time, "missed")
                        continue
                events.append(await self._run_once(batch, job, run_time))
        finally:
            # Counts the instance down and hands the events to the listeners, even when
            # cancelled at shutdown.
            self._run_job_success(job.id, events)
        return events

    async def _run_once(self, batch: Batch, job: Job, run_time: datetime) -> JobExecutionEvent:
        scheduler: QuartScheduler = self._scheduler
        alias = job._jobstore_alias
        app = scheduler.app
        context: Any = _run_context(app)
        logger.debug("Running job %r (scheduled at %s)", job.id, run_time)
        history = scheduler.history
        run_id = history.started(job.id, run_time) if history is not None else None
        set_current_run(job.id, run_time, run_id)  # this task's own context
        try:
            async with context:
                if is_coroutine_function(job.func):
                    retval = await job.func(*job.args, **job.kwargs)
                else:
                    run = contextvars.copy_context().run
                    call = partial(run, job.func, *job.args, **job.kwargs)
                    retval = await batch.pool.run(call)
                if inspect.isawaitable(retval):
                    # A plain function that returned a coroutine: await it here, never drop it.
                    retval = await retval
        except asyncio.CancelledError:
            await self._interrupted(run_id, job, run_time)
            raise
        except Exception as exc:
            formatted = "".join(traceback.format_tb(exc.__traceback__))
            _log_failure(job, run_time, exc)
            await scheduler.report(
                signals.job_failed, job.id, run_time, exception=exc, traceback=formatted
            )
            await scheduler.record_finished(
                run_id, job.id, run_time, "error", error=exc, traceback=formatted
            )
            event = JobExecutionEvent(
                EVENT_JOB_ERROR, job.id, alias, run_time, exception=exc, traceback=formatted
            )
            del exc
            return event
        logger.debug("Job %r (scheduled at %s) executed", job.id, run_time)
        await scheduler.report(signals.job_executed, job.id, run_time, retval=retval)
        await scheduler.record_finished(run_id, job.id, run_time, "success")
        return JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, alias, run_time, retval=retval)


def _log_failure(job: Job, run_time: datetime, exc: BaseException) -> None:
    logger.error(
        "Job %r (scheduled at %s) failed: %s: %s",
        job.id,
        run_time.isoformat(),
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


def _debug() -> bool:
    return logger.isEnabledFor(logging.DEBUG)


_coroutine_functions: dict[Any, bool] = {}


def is_coroutine_function(func: Any) -> bool:
    """``iscoroutinefunction_partial(func)``, remembered per function (it costs a tenth of
    a coroutine run's dispatch otherwise)."""
    try:
        return _coroutine_functions[func]
    except KeyError:
        pass
    except TypeError:  # unhashable
        return bool(iscoroutinefunction_partial(func))
    answer = bool(iscoroutinefunction_partial(func))
    if len(_coroutine_functions) >= 4096:  # job functions come and go: stay bounded
        _coroutine_functions.clear()
    _coroutine_functions[func] = answer
    return answer


class PlainRun:
    """One run of a plain function on the thread path: what the thread needs, and what
    it hands back."""

    __slots__ = (
        "app",
        "batch",
        "cancelled",
        "context",
        "error",
        "executor",
        "job",
        "retval",
        "run_id",
        "run_time",
        "traceback",
    )

    def __init__(
        self,
        executor: QuartExecutor,
        batch: Batch,
        job: Job,
        run_time: datetime,
        app: Any,
        context: contextvars.Context | None,
    ) -> None:
        self.executor = executor
        self.batch = batch
        self.job = job
        self.run_time = run_time
        self.app = app
        self.context = context
        self.run_id: str | None = None
        self.retval: Any = None
        self.error: BaseException | None = None
        self.traceback: str | None = None
        self.cancelled = False

    def run(self) -> None:
        """In a pool thread: push a fresh app context and call the function."""
        if self.cancelled:
            return
        try:
            assert self.context is not None
            self.retval = self.context.run(_call_in_app, self.app, self.job)
        except BaseException as exc:
            self.error = exc
            self.traceback = "".join(traceback.format_tb(exc.__traceback__))
        self.context = None

    def finish(self) -> None:
        """On the loop, once the thread is done."""
        self.executor._finish_plain(self.batch, self)

    def task_done(self, task: asyncio.Task[Any]) -> None:
        """On the loop, once the coroutine's task is done."""
        self.executor._coroutine_done(self.batch, self, task)


def _create_job_task(
    loop: asyncio.AbstractEventLoop,
    context: contextvars.Context,
    app: Quart | None,
    job: Job,
    run_time: datetime,
    run_id: str | None,
) -> Any:
    # In the run's own context, which the task takes over: the run's app context lives
    # and dies with that task.
    set_current_run(job.id, run_time, run_id)
    if app is not None:
        _cv_app.set(fresh_app_context(app))
    coroutine = job.func(*job.args, **job.kwargs)
    if _TASK_CONTEXT:  # the task runs in this context itself, not in a copy of it
        return loop.create_task(coroutine, context=context)  # type: ignore[call-arg,unused-ignore]
    return loop.create_task(coroutine)  # pragma: no cover - Python 3.10


#: Whether ``create_task`` takes a context (Python 3.11).
_TASK_CONTEXT = sys.version_info >= (3, 11)


class RunAppContext(AppContext):
    """A run's fresh app context: Quart's own class, whose ``g``, URL adapter and token
    list are made when first used (most runs use none of them, and a burst of thousands
    of runs would make them all: garbage the collector then pauses the loop for)."""

    def __init__(self, app: Quart) -> None:  # no super().__init__(): see __getattr__
        self.app = app

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set yet.
        if name == "g":
            value: Any = self.app.app_ctx_globals_class()
        elif name == "url_adapter":
            value = self.app.create_url_adapter(None)
        elif name == "_cv_tokens":
            value = []
        else:
            raise AttributeError(name)
        setattr(self, name, value)
        return value


def fresh_app_context(app: Quart) -> AppContext:
    """A new app context for one run: ``app.app_context()``, made lazily unless the app
    class makes its own kind."""
    if type(app).app_context is Quart.app_context:
        return RunAppContext(app)
    return app.app_context()


def _call_in_app(app: Quart | None, job: Job) -> Any:
    # In the run's own context: the app context set here is gone with it, as Quart's pop
    # would leave it (no teardown functions or signals: see _quiet).
    if app is not None:
        _cv_app.set(fresh_app_context(app))
    return job.func(*job.args, **job.kwargs)


def _quiet_app(app: Quart | None) -> bool:
    """Whether a run's app context may be set without Quart's push and pop (nothing
    listens to its signals, no teardown function)."""
    return app is None or not (
        _cv_app is None
        or app.teardown_appcontext_funcs
        or appcontext_pushed.receivers
        or appcontext_popped.receivers
        or appcontext_tearing_down.receivers
    )


def _null_async_context() -> AbstractAsyncContextManager[Any]:
    return nullcontext()


class _QuietAppContext:
    """A fresh app context, pushed without Quart's signal sends.

    Quart's ``AppContext.push``/``pop`` set a context variable, then send
    ``appcontext_pushed``, run the ``teardown_appcontext`` functions, and send
    ``appcontext_tearing_down`` and ``appcontext_popped``. With no receivers and no
    teardown functions those steps do nothing but cost time on every run; this does the
    rest, the same way.
    """

    __slots__ = ("context", "token")

    def __init__(self, app: Quart) -> None:
        self.context = fresh_app_context(app)

    async def __aenter__(self) -> Any:
        self.token = _cv_app.set(self.context)
        return self.context

    async def __aexit__(self, *exc_info: object) -> None:
        _cv_app.reset(self.token)


def _run_context(app: Quart | None) -> Any:
    """The app context a run gets: a fresh one every run."""
    if app is None:
        return _null_async_context()
    if not _quiet_app(app):
        return app.app_context()  # someone listens: Quart's own push and pop
    return _QuietAppContext(app)


async def drain(batch: Batch, timeout: float) -> None:
    """Await the batch's running jobs up to ``timeout`` s, then cancel what is left."""
    waits: set[asyncio.Future[Any]] = set(batch.tasks)
    if batch.plain:
        batch.idle = batch.loop.create_future()
        waits.add(batch.idle)
    if waits:
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for task in pending:
            task.cancel()
        interrupted = [run.executor.interrupt_plain(batch, run) for run in list(batch.plain)]
        if interrupted:
            pending.add(asyncio.ensure_future(asyncio.gather(*interrupted)))
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE)
        # Reports that runs ending meanwhile started (signals to receivers) finish too.
        reports = {task for task in batch.tasks if not task.done()}
        if reports:
            await asyncio.wait(reports, timeout=CANCEL_GRACE)
    # Threads cannot be cancelled: one still running finishes on its own.
    batch.pool.shutdown(wait=False, cancel_futures=True)


def upgrade_executor(executor: Any) -> Any:
    """Replace APScheduler's thread-pool and asyncio executors with ours, keeping the size."""
    if type(executor) is ThreadPoolExecutor:
        return QuartExecutor(max_workers=executor._pool._max_workers)
    if type(executor) is AsyncIOExecutor:
        return QuartExecutor()
    return executor
