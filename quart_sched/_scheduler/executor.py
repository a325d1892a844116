"""Execution: ``async def`` jobs on the serving loop, plain functions in a bounded thread
pool, each run in a fresh app context, every outcome reported."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
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
from quart.signals import appcontext_popped, appcontext_pushed, appcontext_tearing_down

try:  # the variable behind current_app; without it, every run takes Quart's full push
    from quart.globals import _cv_app
except ImportError:  # pragma: no cover - a Quart that moved it
    _cv_app = None  # type: ignore[assignment]

from .. import signals
from ..errors import (
    ConfigurationError,
    SchedulerNotRunningError,
)

if TYPE_CHECKING:
    from quart import Quart


if TYPE_CHECKING:
    from .scheduler import QuartScheduler

from .reporting import CANCEL_GRACE

logger = logging.getLogger("quart_sched")

DEFAULT_MAX_WORKERS = 10


@dataclass
class Batch:
    """What one start of an executor owns; a shutdown drains it while a restart goes on."""

    loop: asyncio.AbstractEventLoop
    pool: concurrent.futures.ThreadPoolExecutor
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class QuartExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs ``async def`` jobs on the serving loop and plain functions in a thread pool.

    Each run gets a fresh app context; threads see it through a copied context, as
    Quart's ``run_sync`` does. ``max_workers`` bounds the threads. Configured
    ``threadpool`` and ``asyncio`` executors are replaced by this one, keeping their size.
    """

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS, pool_kwargs: Any = None) -> None:
        super().__init__()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self._pool_kwargs = dict(pool_kwargs or {})
        self._batch: Batch | None = None

    # APScheduler's executor interface ------------------------------------------------

    def start(self, scheduler: QuartScheduler, alias: str) -> None:
        super().start(scheduler, alias)
        assert scheduler._eventloop is not None, "start the scheduler on a running loop"
        self._batch = Batch(
            loop=scheduler._eventloop,
            pool=concurrent.futures.ThreadPoolExecutor(
                self.max_workers, thread_name_prefix=f"quart_sched-{alias}", **self._pool_kwargs
            ),
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs. Running ones are left to :meth:`drain`, never cancelled here."""
        batch, self._batch = self._batch, None
        if batch is not None and not wait:
            batch.pool.shutdown(wait=False)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self._submit(job, run_times, check_misfire=True)

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

    def _submit(
        self, job: Job, run_times: list[datetime], *, check_misfire: bool
    ) -> asyncio.Task[list[JobExecutionEvent]]:
        batch = self._batch
        if batch is None:
            raise SchedulerNotRunningError
        task = batch.loop.create_task(self._run(batch, job, run_times, check_misfire))
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
        try:
            async with context:
                if iscoroutinefunction_partial(job.func):
                    retval = await job.func(*job.args, **job.kwargs)
                else:
                    run = contextvars.copy_context().run
                    call = partial(run, job.func, *job.args, **job.kwargs)
                    retval = await batch.loop.run_in_executor(batch.pool, call)
                if inspect.isawaitable(retval):
                    # A plain function that returned a coroutine: await it here, never drop it.
                    retval = await retval
        except asyncio.CancelledError:
            logger.warning(
                "Job %r (scheduled at %s) was interrupted: still running when the scheduler "
                "shut down",
                job.id,
                run_time.isoformat(),
            )
            await asyncio.shield(scheduler.report(signals.job_interrupted, job.id, run_time))
            await asyncio.shield(
                scheduler.record_finished(run_id, job.id, run_time, "interrupted")
            )
            raise
        except Exception as exc:
            formatted = "".join(traceback.format_tb(exc.__traceback__))
            logger.error(
                "Job %r (scheduled at %s) failed: %s: %s",
                job.id,
                run_time.isoformat(),
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
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
        self.context = app.app_context()

    async def __aenter__(self) -> Any:
        self.token = _cv_app.set(self.context)
        return self.context

    async def __aexit__(self, *exc_info: object) -> None:
        _cv_app.reset(self.token)


def _run_context(app: Quart | None) -> Any:
    """The app context a run gets: a fresh one every run."""
    if app is None:
        return _null_async_context()
    if (
        _cv_app is None
        or app.teardown_appcontext_funcs
        or appcontext_pushed.receivers
        or appcontext_popped.receivers
        or appcontext_tearing_down.receivers
    ):
        return app.app_context()  # someone listens: Quart's own push and pop
    return _QuietAppContext(app)


async def drain(batch: Batch, timeout: float) -> None:
    """Await the batch's running jobs up to ``timeout`` s, then cancel what is left."""
    tasks = set(batch.tasks)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_GRACE)
    # Threads cannot be cancelled: one still running finishes on its own.
    batch.pool.shutdown(wait=False, cancel_futures=True)


def upgrade_executor(executor: Any) -> Any:
    """Replace APScheduler's thread-pool and asyncio executors with ours, keeping the size."""
    if type(executor) is ThreadPoolExecutor:
        return QuartExecutor(max_workers=executor._pool._max_workers)
    if type(executor) is AsyncIOExecutor:
        return QuartExecutor()
    return executor
