"""APScheduler 3 adapted to a Quart app's serving loop.

This is the only module that touches APScheduler's private attributes. It provides:

* :class:`QuartScheduler`, an ``AsyncIOScheduler`` that binds to the loop it is started
  on, changes ``state`` before ``shutdown()`` returns, drains running jobs before it
  closes its job stores, keeps waking up after job-store errors without running a fire
  twice, and keeps paused jobs paused when they are re-declared at start-up;
* :class:`QuartExecutor`, which runs coroutine functions on the loop and plain functions
  in a bounded thread pool, each run in a fresh app context, and reports every outcome
  to the ``quart_sched`` logger, the listeners and the blinker signals.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import io
import logging
import pickle
import traceback
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_SHUTDOWN,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.executors.base import BaseExecutor, MaxInstancesReachedError
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import (
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STOPPED,
    TIMEOUT_MAX,
)
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import iscoroutinefunction_partial, undefined
from quart.signals import appcontext_popped, appcontext_pushed, appcontext_tearing_down

try:  # the variable behind current_app; without it, every run takes Quart's full push
    from quart.globals import _cv_app
except ImportError:  # pragma: no cover - a Quart that moved it
    _cv_app = None  # type: ignore[assignment]

from . import signals
from ._config import DEFAULT_SHUTDOWN_TIMEOUT
from ._history import run_record
from ._stores import bind_to_thread, is_persistent, unwrap
from .errors import (
    ConfigurationError,
    JobNotLoadableError,
    JobNotStorableError,
    JobStoreUnavailableError,
    SchedulerAlreadyRunningError,
    SchedulerNotRunningError,
)

if TYPE_CHECKING:
    from blinker import NamedSignal
    from quart import Quart

    from ._history import RunHistory

logger = logging.getLogger("quart_sched")

DEFAULT_MAX_WORKERS = 10
#: How long cancelled jobs get to record their interruption at shutdown.
_CANCEL_GRACE = 1.0


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# --------------------------------------------------------------------------- executor


@dataclass
class _Batch:
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
        self._batch: _Batch | None = None

    # APScheduler's executor interface ------------------------------------------------

    def start(self, scheduler: QuartScheduler, alias: str) -> None:
        super().start(scheduler, alias)
        assert scheduler._eventloop is not None, "start the scheduler on a running loop"
        self._batch = _Batch(
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

    def detach(self) -> _Batch | None:
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
        self, batch: _Batch, job: Job, run_times: list[datetime], check_misfire: bool
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

    async def _run_once(self, batch: _Batch, job: Job, run_time: datetime) -> JobExecutionEvent:
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


async def drain(batch: _Batch, timeout: float) -> None:
    """Await the batch's running jobs up to ``timeout`` s, then cancel what is left."""
    tasks = set(batch.tasks)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE)
    # Threads cannot be cancelled: one still running finishes on its own.
    batch.pool.shutdown(wait=False, cancel_futures=True)


def _upgrade_executor(executor: Any) -> Any:
    """Replace APScheduler's thread-pool and asyncio executors with ours, keeping the size."""
    if type(executor) is ThreadPoolExecutor:
        return QuartExecutor(max_workers=executor._pool._max_workers)
    if type(executor) is AsyncIOExecutor:
        return QuartExecutor()
    return executor


# -------------------------------------------------------------------------- scheduler


class QuartScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An ``AsyncIOScheduler`` that lives on the loop serving a Quart app."""

    state: int
    _eventloop: asyncio.AbstractEventLoop | None
    #: The app whose context jobs run in; set by the extension.
    app: Quart | None = None
    #: Seconds running jobs get to finish in :meth:`aclose`.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    #: Where runs are recorded; set by the extension (None: not recorded).
    history: RunHistory | None = None
    #: While True (the app serves), the history stays open when the scheduler stops.
    keep_history_open = False
    #: True between open_stores() and close_stores(): job calls go to the stores.
    _stores_open = False

    def __init__(self, gconfig: Mapping[str, Any] | None = None, **options: Any) -> None:
        self._init_quart_state()
        super().__init__(dict(gconfig or {}), **options)

    def _init_quart_state(self) -> None:
        self._generation = 0
        self._starting = False
        self._closing: asyncio.Task[None] | None = None
        self._failing_stores: dict[str, str] = {}
        self._unloadable_reported: set[tuple[str, str]] = set()
        self._pass: asyncio.Task[None] | None = None
        self._pass_again = False
        self._retime: dict[int, tuple[str, dict[str, Any]]] = {}
        self._pending_index: dict[tuple[str, str], Job] = {}
        self._undrained: list[_Batch] = []
        self._reports: set[asyncio.Task[None]] = set()

    @classmethod
    def adopt(cls, scheduler: Any) -> QuartScheduler:
        """Turn a user's pre-built ``AsyncIOScheduler`` into one of ours, keeping its setup."""
        if isinstance(scheduler, QuartScheduler):
            return scheduler
        if not isinstance(scheduler, AsyncIOScheduler):
            raise TypeError(
                f"quart_sched runs jobs on the app's event loop and needs an AsyncIOScheduler, "
                f"got {type(scheduler).__name__}. Pass AsyncIOScheduler(...) or no scheduler."
            )
        if scheduler.state != STATE_STOPPED:
            raise SchedulerAlreadyRunningError
        base = type(scheduler)
        scheduler.__class__ = (
            cls if base is AsyncIOScheduler else type(f"Quart{base.__name__}", (cls, base), {})
        )
        scheduler._init_quart_state()
        for job, alias, _replace in scheduler._pending_jobs:
            scheduler._pending_index[(alias, job.id)] = job
        for alias, executor in list(scheduler._executors.items()):
            scheduler._executors[alias] = _upgrade_executor(executor)
        adopted: QuartScheduler = scheduler
        return adopted

    # configuration --------------------------------------------------------------------

    def apply_options(self, options: Mapping[str, Any]) -> None:
        """Reconfigure with ``options`` while keeping every setting they do not name.

        (APScheduler's ``configure`` resets what it is not given, which would drop the
        time zone or stores of a pre-built scheduler.)
        """
        if not options:
            return
        merged: dict[str, Any] = {
            "logger": self._logger,
            "timezone": self.timezone,
            "jobstore_retry_interval": self.jobstore_retry_interval,
            "job_defaults": dict(self._job_defaults),
            "executors": dict(self._executors),
            "jobstores": dict(self._jobstores),
        }
        merged["job_defaults"].update(options.get("job_defaults") or {})
        merged.update({k: v for k, v in options.items() if k != "job_defaults"})
        try:
            self.configure(**merged)
        except SchedulerAlreadyRunningError:
            raise
        except Exception as exc:
            raise ConfigurationError(f"invalid scheduler configuration: {exc}") from exc
        self._retime_pending()

    def add_executor(self, executor: Any, alias: str = "default", **executor_opts: Any) -> None:
        if isinstance(executor, str) and executor in ("threadpool", "asyncio"):
            executor = QuartExecutor(**executor_opts)
            executor_opts = {}
        super().add_executor(_upgrade_executor(executor), alias, **executor_opts)

    def _create_default_executor(self) -> QuartExecutor:
        return QuartExecutor()

    def add_jobstore(self, jobstore: Any, alias: str = "default", **jobstore_opts: Any) -> None:
        """APScheduler's ``add_jobstore``; a persistent store gets a thread of its own
        (see ``_stores``) and keeps jobs whose code cannot be loaded."""
        if isinstance(jobstore, str):
            jobstore = self._create_plugin_instance("jobstore", jobstore, jobstore_opts)
        keep_unloadable(unwrap(jobstore))
        super().add_jobstore(bind_to_thread(jobstore, alias), alias)

    def jobstore(self, alias: str = "default") -> Any:
        """The job store added as ``alias``, as the user made it."""
        return unwrap(self._lookup_jobstore(alias))

    # jobs -----------------------------------------------------------------------------

    def add_job(
        self,
        func: Any,
        trigger: Any = None,
        args: Any = None,
        kwargs: Any = None,
        id: str | None = None,
        name: str | None = None,
        misfire_grace_time: Any = undefined,
        coalesce: Any = undefined,
        max_instances: Any = undefined,
        next_run_time: Any = undefined,
        jobstore: str = "default",
        executor: str = "default",
        replace_existing: bool = False,
        **trigger_args: Any,
    ) -> Job:
        # The signature is BaseScheduler.add_job's: scheduled_job (@task) passes it all
        # positionally.
        with self._jobstores_lock:  # re-entrant: the API adds jobs from worker threads
            job: Job = super().add_job(
                func,
                trigger,
                args,
                kwargs,
                id,
                name,
                misfire_grace_time,
                coalesce,
                max_instances,
                next_run_time,
                jobstore,
                executor,
                replace_existing,
                **trigger_args,
            )
            if self.state != STATE_STOPPED:
                return job
            try:
                self._replace_pending(job, jobstore, replace_existing)
                self.check_storable(job, jobstore)
                self._check_executor(job)
            except (JobNotStorableError, ConflictingIdError, ValueError):
                self._pending_jobs[:] = [p for p in self._pending_jobs if p[0] is not job]
                raise
            if isinstance(trigger, str) and "timezone" not in trigger_args:
                # Built with the zone in force now; rebuilt if configure() changes it.
                self._retime[id_of(job)] = (trigger, trigger_args)
        return job

    def _check_executor(self, job: Job) -> None:
        """Refuse a coroutine job on an executor that would never await it."""
        executor = self._executors.get(job.executor)
        if (
            executor is not None
            and not isinstance(executor, QuartExecutor)
            and iscoroutinefunction_partial(job.func)
        ):
            raise ValueError(
                f"Job {job.id!r} is a coroutine function, which executor {job.executor!r} "
                f"({type(executor).__name__}) would never await: use a threadpool or asyncio "
                "executor, or the default one"
            )

    def _replace_pending(self, job: Job, alias: str, replace_existing: bool) -> None:
        """Give a pending job's id the newest declaration, as the store would at start.

        An index finds an earlier declaration in O(1); since APScheduler also edits the
        pending list (remove_job, remove_all_jobs, start), a hit is confirmed in the list.
        """
        key = (alias, job.id)
        other = self._pending_index.get(key)
        self._pending_index[key] = job
        if other is None or other is job or not any(p[0] is other for p in self._pending_jobs):
            return
        if not replace_existing:
            self._pending_index[key] = other
            raise ConflictingIdError(job.id)
        if getattr(other, "next_run_time", undefined) is None and not hasattr(
            job, "next_run_time"
        ):
            job._modify(next_run_time=None)  # re-declared: stays paused
        self._pending_jobs[:] = [p for p in self._pending_jobs if p[0] is not other]

    def _retime_pending(self) -> None:
        for job, alias, _replace in self._pending_jobs:
            self.check_storable(job, alias)
            self._check_executor(job)
            spec = self._retime.get(id_of(job))
            if spec is not None:
                job._modify(trigger=self._create_trigger(spec[0], dict(spec[1])))
        self._retime.clear()

    def make_trigger(self, trigger: Any, trigger_args: Mapping[str, Any]) -> BaseTrigger:
        """Build a trigger as ``add_job`` would, in the scheduler's time zone."""
        built: BaseTrigger = self._create_trigger(trigger, dict(trigger_args))
        return built

    def _real_add_job(self, job: Job, jobstore_alias: str, replace_existing: bool) -> None:
        self.check_storable(job, jobstore_alias)
        self._check_executor(job)
        if self._starting and replace_existing and not hasattr(job, "next_run_time"):
            # A job re-declared at start-up (config, @task) keeps the paused state it has
            # in a persistent store.
            try:
                stored = self._lookup_jobstore(jobstore_alias).lookup_job(job.id)
            except Exception:
                stored = None
            if stored is not None and stored.next_run_time is None:
                job._modify(next_run_time=None)
        super()._real_add_job(job, jobstore_alias, replace_existing)

    def modify_job(self, job_id: str, jobstore: str | None = None, **changes: Any) -> Job:
        self._check_store_write(job_id, jobstore)
        if changes.keys() & {"func", "args", "kwargs", "trigger"}:
            with self._jobstores_lock:
                job, alias = self._lookup_job(job_id, jobstore)
                if alias is None:  # still pending: it goes to the store it was added for
                    alias = next((a for j, a, _ in self._pending_jobs if j is job), "default")
                store = self._jobstores.get(alias)
                if store is not None and is_persistent(store):
                    candidate = _copy_job(job)
                    candidate._modify(**dict(changes))
                    self.check_storable(candidate, alias)
        modified: Job = super().modify_job(job_id, jobstore, **changes)
        return modified

    def check_storable(self, job: Job, jobstore_alias: str) -> None:
        """Raise :class:`JobNotStorableError` naming what a persistent store cannot hold."""
        store = self._jobstores.get(jobstore_alias)
        if store is None or not is_persistent(store):
            return
        where = f"job store {jobstore_alias!r} ({type(unwrap(store)).__name__})"
        if not job.func_ref:
            raise JobNotStorableError(
                job.id,
                "func",
                f"Job {job.id!r}: {where} stores functions by reference and {job.func!r} has "
                "none. Use a module-level function or a 'module:function' string.",
            )
        protocol = getattr(store, "pickle_protocol", pickle.HIGHEST_PROTOCOL)
        items: list[tuple[str, Any]] = [(f"args[{i}]", arg) for i, arg in enumerate(job.args)]
        items += [(f"kwargs[{key!r}]", value) for key, value in job.kwargs.items()]
        items.append(("trigger", job.trigger))
        for culprit, value in items:
            try:
                pickle.dumps(value, protocol)
            except Exception as exc:
                raise JobNotStorableError(
                    job.id,
                    culprit,
                    f"Job {job.id!r}: {culprit} (a {type(value).__name__}) cannot be stored "
                    f"in {where}: {exc}. Pass something picklable, such as an id to look "
                    "the object up with.",
                ) from exc

    def run_job_now(self, job: Job) -> asyncio.Future[Any]:
        """Run a job once now through its executor; the future yields its return value."""
        if self.state == STATE_STOPPED and not self._stores_open:
            raise SchedulerNotRunningError
        if isinstance(job, UnloadableJob):
            raise JobNotLoadableError(job.id, job.load_error)
        executor = self._lookup_executor(job.executor)
        loop = asyncio.get_running_loop()
        if not isinstance(executor, QuartExecutor):
            executor.submit_job(job, [datetime.now(timezone.utc)])
            done: asyncio.Future[Any] = loop.create_future()
            done.set_result(None)
            return done
        task = executor.submit_now(job)
        self._dispatch_event(
            JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, job._jobstore_alias, [])
        )
        result = asyncio.ensure_future(_result_of(task))
        result.add_done_callback(_retrieve)
        return result

    @property
    def job_defaults(self) -> dict[str, Any]:
        """``misfire_grace_time``, ``coalesce`` and ``max_instances`` jobs get by default."""
        return dict(self._job_defaults)

    @property
    def memory_only(self) -> bool:
        """True when every job store is in memory: calls into them never block."""
        return not any(is_persistent(store) for store in self._jobstores.values())

    def running_instances(self, job_id: str) -> int:
        """How many runs of ``job_id`` are under way now, across executors."""
        return sum(ex._instances.get(job_id, 0) for ex in self._executors.values())

    # the job stores without the scheduler (the CLI) -----------------------------------

    def open_stores(self) -> None:
        """Open the job stores (and start the executors) without starting the scheduler.

        For a process that steers jobs another process runs (``quart scheduler``): job
        calls then read and write the stores, nothing runs on its own, :meth:`run_job_now`
        works, and jobs declared in code or config are *not* written over the stored ones
        (no next run time reset, no pause undone). In-memory stores show the jobs this
        process declared, as the process running them has them; changing those is
        refused, since that process would never see the change. Call on the loop that
        runs :meth:`run_job_now`'s jobs; await :meth:`close_stores` when done.
        """
        if self.state != STATE_STOPPED or self._stores_open:
            raise SchedulerAlreadyRunningError
        self._eventloop = asyncio.get_running_loop()
        with self._executors_lock:
            if "default" not in self._executors:
                self.add_executor(self._create_default_executor(), "default")
            for alias, executor in self._executors.items():
                executor.start(self, alias)
        with self._jobstores_lock:
            if "default" not in self._jobstores:
                self.add_jobstore(self._create_default_jobstore(), "default")
            opened: list[Any] = []
            try:
                for alias, store in self._jobstores.items():
                    store.start(self, alias)
                    opened.append(store)
            except BaseException:
                self._close_stores(opened)
                self._stop_executors_now()
                self._eventloop = None
                raise
            self._show_declared_memory_jobs()
        self._stores_open = True

    def _show_declared_memory_jobs(self) -> None:
        """Put copies of the declared jobs of in-memory stores in them, completed as a
        start would (defaults, next run time); the declarations stay pending."""
        now = datetime.now(self.timezone)
        for job, alias, _replace in self._pending_jobs:
            store = self._jobstores.get(alias)
            if not isinstance(store, MemoryJobStore):
                continue
            shown = _copy_job(job)
            changes = {k: v for k, v in self._job_defaults.items() if not hasattr(shown, k)}
            if not hasattr(shown, "next_run_time"):
                changes["next_run_time"] = shown.trigger.get_next_fire_time(None, now)
            shown._modify(**changes)
            shown._jobstore_alias = alias
            try:
                store.add_job(shown)
            except ConflictingIdError:
                store.update_job(shown)

    async def close_stores(self) -> None:
        """Undo :meth:`open_stores`: runs started meanwhile get ``shutdown_timeout``
        seconds to finish, then the stores close."""
        if not self._stores_open:
            return
        self._stores_open = False
        batches = self._stop_executors_now()
        await asyncio.gather(*(drain(batch, self.shutdown_timeout) for batch in batches))
        self._eventloop = None
        with self._jobstores_lock:
            for store in self._jobstores.values():
                if isinstance(store, MemoryJobStore):
                    store.remove_all_jobs()  # the copies; the declarations are pending
        self._close_stores(list(self._jobstores.values()))

    def _stop_executors_now(self) -> list[_Batch]:
        batches = []
        with self._executors_lock:
            for executor in self._executors.values():
                if isinstance(executor, QuartExecutor):
                    batch = executor.detach()
                    if batch is not None:
                        batches.append(batch)
                else:
                    executor.shutdown(wait=False)
        return batches

    def probe_stores(self) -> dict[str, tuple[str, str | None]]:
        """Ask every job store one cheap question: alias -> (the store's class name, what
        failed or None). Reads no job, so it neither loads functions nor lets a store drop
        a job it cannot load."""
        probed: dict[str, tuple[str, str | None]] = {}
        for alias, store in list(self._jobstores.items()):
            problem = None
            try:
                store.get_next_run_time()
            except Exception as exc:
                cause = getattr(exc, "orig", None) or exc
                problem = f"{type(cause).__name__}: {cause}"
            probed[alias] = (type(unwrap(store)).__name__, problem)
        return probed

    def _stores_only(self) -> bool:
        return self._stores_open and self.state == STATE_STOPPED

    def _check_store_write(self, job_id: str, jobstore: str | None) -> None:
        if not self._stores_only():
            return
        _job, alias = self._lookup_job(job_id, jobstore)
        if isinstance(self._jobstores.get(alias), MemoryJobStore):
            raise JobStoreUnavailableError(
                f"Job {job_id!r} is in the in-memory job store {alias!r}, which lives in the "
                "process that runs it: a change made here would not reach it. Configure a "
                "persistent job store (SCHEDULER_JOBSTORES) to steer it from another process."
            )

    def get_jobs(self, jobstore: str | None = None, pending: Any = None) -> list[Job]:
        if not self._stores_only():
            jobs: list[Job] = super().get_jobs(jobstore, pending)
            return jobs
        with self._jobstores_lock:
            found: list[Job] = []
            for alias, store in self._jobstores.items():
                if jobstore in (None, alias):
                    found += store.get_all_jobs()
            return found

    def _lookup_job(self, job_id: str, jobstore_alias: str | None) -> tuple[Job, str | None]:
        if not self._stores_only():
            found: tuple[Job, str | None] = super()._lookup_job(job_id, jobstore_alias)
            return found
        for alias, store in self._jobstores.items():
            if jobstore_alias in (None, alias):
                job = store.lookup_job(job_id)
                if job is not None:
                    return job, alias
        raise JobLookupError(job_id)

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        if not self._stores_only():
            super().remove_job(job_id, jobstore)
            return
        with self._jobstores_lock:
            self._check_store_write(job_id, jobstore)
            _job, alias = self._lookup_job(job_id, jobstore)
            assert alias is not None
            self._lookup_jobstore(alias).remove_job(job_id)
        self._dispatch_event(JobEvent(EVENT_JOB_REMOVED, job_id, alias))

    # lifecycle --------------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        """Start on the running loop; raises ``RuntimeError`` outside one."""
        if self.state != STATE_STOPPED:
            raise SchedulerAlreadyRunningError
        self._eventloop = asyncio.get_running_loop()
        self._generation += 1
        self._failing_stores.clear()
        if self.history is not None:
            self.history.start()
        self._starting = True
        try:
            super().start(paused)
        finally:
            self._starting = False

    def shutdown(self, wait: bool = True) -> None:
        """Stop now: ``state`` is stopped when this returns, from any thread.

        Running jobs are not interrupted. With ``wait`` they get ``shutdown_timeout``
        seconds to finish (await :meth:`aclose` to wait for that), are cancelled after that
        and logged as interrupted; job stores close once they are done.
        """
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        loop = self._eventloop
        if loop is None or loop.is_closed() or not loop.is_running() or _on_loop(loop):
            self._stop(wait)
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def stop() -> None:
            try:
                self._stop(wait)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(stop)
        done.result()

    def _stop(self, wait: bool) -> None:
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        self.state = STATE_STOPPED
        self._stop_timer()
        loop, self._eventloop = self._eventloop, None
        with self._executors_lock:
            batches = []
            for executor in self._executors.values():
                if isinstance(executor, QuartExecutor):
                    batch = executor.detach()
                    if batch is not None:
                        batches.append(batch)
                else:
                    executor.shutdown(wait=False)
        with self._jobstores_lock:
            self._keep_memory_jobs()
        stores = list(self._jobstores.values())
        timeout = self.shutdown_timeout if wait else None
        close = self._close(batches, stores, self._generation, timeout)
        if loop is not None and loop.is_running():
            self._closing = loop.create_task(close)
        else:
            close.close()
            for batch in batches:
                batch.pool.shutdown(wait=False, cancel_futures=True)
            self._close_stores(stores)
            if self.history is not None:
                self.history.close_now()
        logger.info("Scheduler stopped: no new runs; running jobs get to finish")
        self._dispatch_event(SchedulerEvent(EVENT_SCHEDULER_SHUTDOWN))

    async def _close(
        self, batches: list[_Batch], stores: list[Any], generation: int, timeout: float | None
    ) -> None:
        if timeout is not None:
            await asyncio.gather(*(drain(batch, timeout) for batch in batches))
        else:
            # shutdown(wait=False): the runs go on; aclose() (the end of serving) still
            # waits for them, so that their ends are recorded.
            self._undrained += batches
            for batch in batches:
                batch.pool.shutdown(wait=False)
        if self._generation == generation:  # not started again in the meantime
            self._close_stores(stores)
            if self.history is not None and not self.keep_history_open and not self._undrained:
                await self.history.aclose()  # after the drain: interruptions are recorded
        logger.info("Scheduler shut down")

    def _keep_memory_jobs(self) -> None:
        """Move in-memory jobs back to the pending list, next run times and pauses kept.

        APScheduler's MemoryJobStore drops its jobs at shutdown; ours survive a stop and
        start again (serving twice, app factories, tests), and stay listed while stopped.
        ``remove_all_jobs()`` clears them on purpose.
        """
        kept = []
        for alias, store in self._jobstores.items():
            if isinstance(store, MemoryJobStore):
                kept += [(job, alias, True) for job in store.get_all_jobs()]
                store.remove_all_jobs()
        self._pending_jobs[:0] = kept
        for job, alias, _replace in kept:
            self._pending_index[(alias, job.id)] = job

    def _close_stores(self, stores: Iterable[Any]) -> None:
        for store in stores:
            try:
                store.shutdown()
            except Exception:
                logger.exception("Closing job store %r failed", store)

    async def aclose(self, timeout: float | None = None) -> None:
        """Shut down if running, let running jobs finish (up to ``timeout`` s, default
        ``shutdown_timeout``), cancel the rest, then close the job stores."""
        if timeout is not None:
            self.shutdown_timeout = timeout
        if self.state != STATE_STOPPED:
            self._stop(wait=True)
        closing, self._closing = self._closing, None
        if closing is not None:
            await closing
        undrained, self._undrained = self._undrained, []
        if undrained:
            await asyncio.gather(*(drain(batch, self.shutdown_timeout) for batch in undrained))
            if self.history is not None and not self.keep_history_open:
                await self.history.aclose()
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=_CANCEL_GRACE)

    # reporting ------------------------------------------------------------------------

    async def report(
        self, signal: NamedSignal, job_id: str, run_time: datetime, **extra: Any
    ) -> None:
        """Send a run signal; a failing receiver is logged, never fatal to the job."""
        if not signal.receivers:
            return
        sender: Any = self.app if self.app is not None else self
        try:
            if self.app is not None:
                await signal.send_async(
                    sender,
                    _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
                    job_id=job_id,
                    scheduled_run_time=run_time,
                    **extra,
                )
            else:
                signal.send(sender, job_id=job_id, scheduled_run_time=run_time, **extra)
        except Exception:
            logger.exception("A receiver of %s failed for job %r", signal.name, job_id)

    def _report_soon(self, signal: NamedSignal, job_id: str, run_time: datetime) -> None:
        history = self.history
        if (signal.receivers or history is not None) and self._eventloop is not None:
            task = self._eventloop.create_task(self._report_skip(signal, job_id, run_time))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)

    async def _report_skip(self, signal: NamedSignal, job_id: str, run_time: datetime) -> None:
        await self.report(signal, job_id, run_time)
        await self.record_not_run(job_id, run_time, "skipped")

    async def record_finished(
        self, run_id: str | None, job_id: str, run_time: datetime, outcome: str, **error: Any
    ) -> None:
        """Record how a run ended in the history, and send ``run_finished``."""
        if run_id is None or self.history is None:
            return
        row = self.history.finished(run_id, outcome, **error)
        if signals.run_finished.receivers:
            await self.report(signals.run_finished, job_id, run_time, run=run_record(row))

    async def record_not_run(self, job_id: str, run_time: datetime, outcome: str) -> None:
        """Record a run that never started (missed, skipped), and send ``run_finished``."""
        if self.history is None:
            return
        row = self.history.not_run(job_id, run_time, outcome)
        if signals.run_finished.receivers:
            await self.report(signals.run_finished, job_id, run_time, run=run_record(row))

    # the wake-up loop -----------------------------------------------------------------
    #
    # One pass per wake-up, as a task on the loop. For each store: take the due jobs and
    # record their next run times (in a worker thread for a persistent store, so the loop
    # never waits on it), then submit the runs on the loop. A fire is recorded in the
    # store *before* it runs: when the store cannot take the write, the fire waits for it
    # (and catches up by the job's coalesce and misfire settings), instead of running from
    # a state that a later write could undo or that would run it again.

    def wakeup(self) -> None:
        """Process due jobs soon: from any thread, coalescing requests made meanwhile."""
        loop = self._eventloop
        if loop is None or loop.is_closed():
            return
        if _on_loop(loop):
            self._request_pass()
        else:
            loop.call_soon_threadsafe(self._request_pass)

    def _request_pass(self) -> None:
        if self.state == STATE_STOPPED or self._eventloop is None:
            return
        self._stop_timer()
        if self._pass is not None:
            self._pass_again = True  # something changed during the pass: look again after
            return
        self._pass = self._eventloop.create_task(self._run_passes())

    async def _run_passes(self) -> None:
        wait: float | None = None
        try:
            while True:
                self._pass_again = False
                try:
                    wait = await self._process_due()
                except Exception:
                    wait = float(self.jobstore_retry_interval)
                    logger.exception("Processing due jobs failed; trying again in %.3g s", wait)
                if not self._pass_again or self.state == STATE_STOPPED:
                    break
        finally:
            self._pass = None
        if self.state == STATE_RUNNING:
            self._start_timer(wait)

    async def _process_due(self) -> float | None:
        if self.state != STATE_RUNNING:
            return None
        next_wakeup: datetime | None = None
        events: list[Any] = []
        for alias, store in list(self._jobstores.items()):
            if is_persistent(store):
                taken = await asyncio.to_thread(self._take_due, alias, store)
            else:
                taken = self._take_due(alias, store)
            for removed in taken.removed:
                events.append(JobEvent(EVENT_JOB_REMOVED, removed, alias))
            events += self._submit_fires(alias, taken.fires)
            for when in (taken.next_run, taken.retry_at):
                if when is not None and (next_wakeup is None or when < next_wakeup):
                    next_wakeup = when
        for event in events:
            self._dispatch_event(event)
        if self.state != STATE_RUNNING or next_wakeup is None:
            return None
        wait = next_wakeup.timestamp() - datetime.now(self.timezone).timestamp()
        return float(min(max(wait, 0.0), TIMEOUT_MAX))

    def _take_due(self, alias: str, store: Any) -> _Taken:
        """Take the due jobs of one store and record their next run times in it.

        Runs in a worker thread for a persistent store; ``now`` is read after the store
        answered, so time spent waiting on it never makes runs look due twice.
        """
        taken = _Taken()
        with self._jobstores_lock:
            try:
                now = datetime.now(self.timezone)
                due_jobs = store.get_due_jobs(now)
                now = datetime.now(self.timezone)
                for job in due_jobs:
                    if isinstance(job, UnloadableJob):
                        self._report_unloadable(job)
                        taken.blocked = True
                        continue
                    self._take_one(alias, store, job, now, taken)
                taken.next_run = self._store_next_run(store, now, taken.blocked)
            except Exception as exc:
                taken.retry_at = self._store_failed(alias, exc, datetime.now(self.timezone))
                return taken
        self._store_ok(alias)
        return taken

    def _take_one(self, alias: str, store: Any, job: Job, now: datetime, taken: _Taken) -> None:
        if job.executor not in self._executors:
            logger.error(
                "Job %r names executor %r, which does not exist; removing the job",
                job.id,
                job.executor,
            )
            store.remove_job(job.id)
            taken.removed.append(job.id)
            return
        run_times = due_run_times(job, now)
        if not run_times:
            return
        next_run = job.trigger.get_next_fire_time(run_times[-1], now)
        # Recorded before the runs start; if this raises, they do not start.
        try:
            if next_run is None:
                store.remove_job(job.id)
                taken.removed.append(job.id)
            else:
                job._modify(next_run_time=next_run)
                store.update_job(job)
        except JobLookupError:
            return  # removed meanwhile: its fire goes with it
        taken.fires.append((job, run_times))

    def _store_next_run(self, store: Any, now: datetime, blocked: bool) -> datetime | None:
        """When the store next has work; past unloadable jobs are retried later, not now."""
        next_run: datetime | None = store.get_next_run_time()
        if next_run is not None and blocked and next_run <= now:
            loadable = [
                job.next_run_time
                for job in store.get_all_jobs()
                if job.next_run_time is not None and not isinstance(job, UnloadableJob)
            ]
            retry = now + timedelta(seconds=self.jobstore_retry_interval)
            next_run = min([*loadable, retry])
        return None if next_run is None else next_run.astimezone(self.timezone)

    def _report_unloadable(self, job: UnloadableJob) -> None:
        key = (job.id, job.load_error)
        level = logging.DEBUG if key in self._unloadable_reported else logging.WARNING
        self._unloadable_reported.add(key)
        logger.log(
            level,
            "Job %r cannot be loaded (%s); it is kept in its store and runs again once its "
            "code loads",
            job.id,
            job.load_error,
        )

    def _submit_fires(self, alias: str, fires: list[tuple[Job, list[datetime]]]) -> list[Any]:
        events: list[Any] = []
        for job, run_times in fires:
            try:
                executor = self._lookup_executor(job.executor)
                executor.submit_job(job, run_times)
            except MaxInstancesReachedError:
                logger.warning(
                    "Run of job %r skipped: %d instance(s) already running (max_instances)",
                    job.id,
                    job.max_instances,
                )
                events.append(
                    JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times)
                )
                for run_time in run_times:
                    self._report_soon(signals.job_skipped, job.id, run_time)
            except Exception:
                logger.exception("Submitting job %r to executor %r failed", job.id, job.executor)
            else:
                events.append(JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, alias, run_times))
        return events

    def _store_failed(self, alias: str, exc: Exception, now: datetime) -> datetime:
        retry = self.jobstore_retry_interval
        # SQLAlchemy's message repeats the statement and its parameters, which change on
        # every retry (and may hold pickled job data): the driver's own error says enough.
        cause = getattr(exc, "orig", None) or exc
        message = f"{type(cause).__name__}: {cause}"
        level = logging.DEBUG if self._failing_stores.get(alias) == message else logging.WARNING
        self._failing_stores[alias] = message
        logger.log(level, "Job store %r failed (%s); retrying in %.3g s", alias, message, retry)
        return now + timedelta(seconds=retry)

    def _store_ok(self, alias: str) -> None:
        if self._failing_stores.pop(alias, None) is not None:
            logger.warning("Job store %r is reachable again; resuming", alias)


@dataclass
class _Taken:
    """What one pass took from one store: runs to start and when to look again."""

    fires: list[tuple[Job, list[datetime]]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    next_run: datetime | None = None
    retry_at: datetime | None = None
    blocked: bool = False  # unloadable jobs are due: the store's next run time hides others


def due_run_times(job: Job, now: datetime) -> list[datetime]:
    """The run times of ``job`` due at ``now``: the last one only when it coalesces."""
    run_times: list[datetime] = job._get_run_times(now)
    if run_times and job.coalesce:
        return run_times[-1:]
    return run_times


# --------------------------------------------------------------------- unloadable jobs


class UnloadableJob(Job):  # type: ignore[misc]
    """A stored job whose function or arguments cannot be loaded now.

    APScheduler deletes such jobs from their store; quart_sched keeps them there, never
    runs or rewrites them, and loads them again on every pass until their code is back.
    ``load_error`` says why it failed.
    """

    __slots__ = ("load_error",)
    load_error: str


def load_error(job: Job) -> str | None:
    """Why ``job`` could not be loaded from its store, or None for a job that loaded."""
    return job.load_error if isinstance(job, UnloadableJob) else None


class _Missing:
    """Stands in for a class that a stored job's state names and that cannot be imported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<missing {type(self).__qualname__}>"


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception:
            return type(f"{module}.{name}", (_Missing,), {})


def _unloadable(store: Any, job_state: bytes, error: BaseException) -> UnloadableJob:
    state = _LenientUnpickler(io.BytesIO(job_state)).load()
    job: UnloadableJob = UnloadableJob.__new__(UnloadableJob)
    job.id = state["id"]
    job.func_ref = state["func"]
    job.func = None
    job.trigger = state["trigger"]
    job.executor = state["executor"]
    job.args = state["args"]
    job.kwargs = state["kwargs"]
    job.name = state["name"]
    job.misfire_grace_time = state["misfire_grace_time"]
    job.coalesce = state["coalesce"]
    job.max_instances = state["max_instances"]
    job.next_run_time = state["next_run_time"]
    job._scheduler = store._scheduler
    job._jobstore_alias = store._alias
    job.load_error = f"{type(error).__name__}: {error}"
    return job


def keep_unloadable(store: Any) -> None:
    """Make a pickling job store hand back :class:`UnloadableJob` instead of deleting a job
    whose state fails to load (APScheduler's stores delete what ``_reconstitute_job``
    cannot rebuild)."""
    reconstitute = getattr(store, "_reconstitute_job", None)
    if reconstitute is None or getattr(reconstitute, "keeps_unloadable", False):
        return

    def reconstitute_or_keep(job_state: Any) -> Any:
        try:
            return reconstitute(job_state)
        except (Exception, SystemExit) as exc:  # a module may sys.exit() on import
            if not isinstance(job_state, bytes):
                raise
            try:
                return _unloadable(store, job_state, exc)
            except Exception:
                raise exc from None  # not even readable: APScheduler's handling

    reconstitute_or_keep.keeps_unloadable = True  # type: ignore[attr-defined]
    store._reconstitute_job = reconstitute_or_keep
    update_job = store.update_job

    def update_loadable_job(job: Job) -> None:
        if isinstance(job, UnloadableJob):  # its state would be written back half-read
            raise JobNotLoadableError(job.id, job.load_error)
        update_job(job)

    store.update_job = update_loadable_job


id_of = id  # add_job's `id` parameter shadows the builtin


def _copy_job(job: Job) -> Job:
    """A shallow copy that works for pending jobs too (their __getstate__ does not)."""
    copied: Job = object.__new__(type(job))
    for slot in type(job).__slots__:
        if slot != "__weakref__" and hasattr(job, slot):
            setattr(copied, slot, getattr(job, slot))
    return copied


def _retrieve(future: asyncio.Future[Any]) -> None:
    # The executor already logged a failure: a caller who never awaits the result must not
    # get asyncio's "exception was never retrieved" on top.
    if not future.cancelled():
        future.exception()


async def _result_of(task: asyncio.Task[list[JobExecutionEvent]]) -> Any:
    events = await task
    for event in events:
        if event.exception is not None:
            raise event.exception
        return event.retval
    return None


__all__ = [
    "STATE_PAUSED",
    "STATE_RUNNING",
    "STATE_STOPPED",
    "QuartExecutor",
    "QuartScheduler",
    "undefined",
]
