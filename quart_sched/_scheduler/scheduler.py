"""``QuartScheduler``: an ``AsyncIOScheduler`` that lives on the loop serving a Quart app."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import pickle
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from apscheduler.events import (
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_SHUTDOWN,
    JobExecutionEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import (
    STATE_STOPPED,
)
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import iscoroutinefunction_partial, undefined

from .._config import DEFAULT_SHUTDOWN_TIMEOUT
from .._coordination.coordinator import Coordinator
from .._stores import bind_to_thread, is_persistent, unwrap
from ..errors import (
    ConfigurationError,
    JobNotLoadableError,
    JobNotStorableError,
    SchedulerAlreadyRunningError,
    SchedulerNotRunningError,
)
from ..triggers import CronTrigger
from .executor import Batch, QuartExecutor, drain, upgrade_executor
from .jobs import copy_job
from .leadership import Leadership
from .reporting import CANCEL_GRACE, Reporting
from .steering import StoresOnly
from .unloadable import UnloadableJob, keep_unloadable
from .wakeup import WakeupLoop, on_loop

logger = logging.getLogger("quart_sched")

#: How a running scheduler holds the run history open (see ``RunHistory.hold``).
HOLDER = "scheduler"


class QuartScheduler(StoresOnly, Leadership, WakeupLoop, Reporting):
    """An ``AsyncIOScheduler`` that lives on the loop serving a Quart app.

    This class holds configuration, jobs (pending ones included) and the start/stop
    lifecycle; the wake-up passes are :class:`WakeupLoop`'s, reporting is
    :class:`Reporting`'s and runs are :class:`QuartExecutor`'s.
    """

    state: int
    _eventloop: asyncio.AbstractEventLoop | None
    #: Seconds running jobs get to finish in :meth:`aclose`.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT

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
        self._undrained: list[Batch] = []
        self._reports: set[asyncio.Task[None]] = set()
        self._leadership_tasks: set[asyncio.Task[Any]] = set()
        self._default_starts: dict[int, Any] = {}

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
            scheduler._executors[alias] = upgrade_executor(executor)
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
        super().add_executor(upgrade_executor(executor), alias, **executor_opts)

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

    def _create_trigger(self, trigger: Any, trigger_args: dict[str, Any]) -> BaseTrigger:
        # Every job built from the name "cron" (config, @task, add_job, modify_job, the API)
        # gets Vixie cron's rule on DST nights; a trigger instance given is kept as it is.
        if isinstance(trigger, str) and trigger == "cron":
            trigger_args.setdefault("timezone", self.timezone)
            return CronTrigger(**trigger_args)
        built: BaseTrigger = super()._create_trigger(trigger, trigger_args)
        self.note_trigger(built, trigger_args)
        return built

    def make_trigger(self, trigger: Any, trigger_args: Mapping[str, Any]) -> BaseTrigger:
        """Build a trigger as ``add_job`` would, in the scheduler's time zone."""
        built: BaseTrigger = self._create_trigger(trigger, dict(trigger_args))
        return built

    def _real_add_job(self, job: Job, jobstore_alias: str, replace_existing: bool) -> None:
        self.check_storable(job, jobstore_alias)
        self._check_executor(job)
        if self._starting and not hasattr(job, "next_run_time"):
            # A job declared in code or config, written at start-up: another process (the
            # leader, or this app before a restart) may have stored it already. The same
            # declaration is never a conflict; a changed one is, unless it replaces.
            try:
                stored = self._lookup_jobstore(jobstore_alias).lookup_job(job.id)
            except Exception:
                stored = None
            if stored is not None and self._keep_stored(job, stored, replace_existing):
                return
        super()._real_add_job(job, jobstore_alias, replace_existing)

    def _keep_stored(self, job: Job, stored: Job, replace: bool) -> bool:
        """Whether the stored job already is this declaration (then nothing is written: a
        worker starting, or a restart, never resets its next run time). A changed one keeps
        its stored next run time if its trigger is the same, and its pause in any case."""
        if isinstance(stored, UnloadableJob):
            return False  # its code loads now: write it again
        declared = copy_job(job)
        declared._modify(
            **{k: v for k, v in self._job_defaults.items() if not hasattr(declared, k)},
            next_run_time=stored.next_run_time,
        )
        try:
            if _state(declared) == _state(stored):
                return True
            same_trigger = _trigger_state(job.trigger) == _trigger_state(stored.trigger)
        except Exception:
            return False
        if replace and (same_trigger or stored.next_run_time is None):
            job._modify(next_run_time=stored.next_run_time)
        return False

    def modify_job(self, job_id: str, jobstore: str | None = None, **changes: Any) -> Job:
        self._check_store_write(job_id, jobstore)
        if changes.keys() & {"func", "args", "kwargs", "trigger"}:
            with self._jobstores_lock:
                job, alias = self._lookup_job(job_id, jobstore)
                if alias is None:  # still pending: it goes to the store it was added for
                    alias = next((a for j, a, _ in self._pending_jobs if j is job), "default")
                store = self._jobstores.get(alias)
                if store is not None and is_persistent(store):
                    candidate = copy_job(job)
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

    def on_its_loop(self) -> bool:
        """True when called on the thread of the loop the scheduler runs on."""
        return self._eventloop is not None and on_loop(self._eventloop)

    def run_job_now(self, job: Job) -> asyncio.Future[Any]:
        """Run a job once now through its executor; the future yields its return value.

        Call it on the scheduler's loop; from another thread, use :meth:`run_job_threadsafe`.
        """
        if self.state == STATE_STOPPED and not self._stores_open:
            raise SchedulerNotRunningError
        if not self.on_its_loop():
            raise RuntimeError(
                "run_job_now() must be called on the scheduler's event loop; from another "
                "thread use run_job_threadsafe()"
            )
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

    def run_job_threadsafe(self, job: Job) -> concurrent.futures.Future[Any]:
        """:meth:`run_job_now` from a thread other than the loop's (a plain ``def`` view,
        which Quart runs in a thread, or a plain-function job).

        The run is handed to the scheduler's loop; this waits only until it has been
        submitted, so ``MaxInstancesReachedError`` and ``SchedulerNotRunningError`` are
        raised here, as on the loop. The returned future yields the job's return value
        or raises its exception; ``future.result(timeout)`` blocks the calling thread.
        """
        loop = self._eventloop
        if self.state == STATE_STOPPED or loop is None:
            raise SchedulerNotRunningError
        if on_loop(loop):
            raise RuntimeError(
                "run_job_threadsafe() was called on the scheduler's own loop, where waiting "
                "for it would block the loop: use run_job_now() and await its future"
            )
        if loop.is_closed() or not loop.is_running():
            raise RuntimeError(
                "the scheduler's event loop is not running, so no job can run: serve the "
                "app (or start the scheduler inside a running loop) first"
            )
        submitted: concurrent.futures.Future[None] = concurrent.futures.Future()
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def copy_outcome(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                result.cancel()
            elif future.exception() is not None:
                result.set_exception(future.exception())
            else:
                result.set_result(future.result())

        def submit() -> None:
            try:
                future = self.run_job_now(job)
            except BaseException as exc:
                submitted.set_exception(exc)
                return
            submitted.set_result(None)
            future.add_done_callback(copy_outcome)

        loop.call_soon_threadsafe(submit)
        submitted.result()
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

    # lifecycle --------------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        """Start on the running loop; raises ``RuntimeError`` outside one."""
        if self.state != STATE_STOPPED:
            raise SchedulerAlreadyRunningError
        self._eventloop = asyncio.get_running_loop()
        self._generation += 1
        self._failing_stores.clear()
        if self.history is not None:
            self.history.hold(HOLDER)  # released once this run's jobs are drained
        self._plan_start()
        self._starting = True
        try:
            super().start(paused)
        finally:
            self._starting = False
        # The pending jobs are in their stores now, and configure() cannot change the zone
        # while running: what was kept for them would stay for nothing, two small objects
        # per job (13 MiB for 100,000 jobs). A stop makes the in-memory jobs pending again.
        self._pending_index.clear()
        self._retime.clear()
        self._start_coordination(self._eventloop)

    def shutdown(self, wait: bool = True) -> None:
        """Stop now: ``state`` is stopped when this returns, from any thread.

        Running jobs are not interrupted. With ``wait`` they get ``shutdown_timeout``
        seconds to finish (await :meth:`aclose` to wait for that), are cancelled after that
        and logged as interrupted; job stores close once they are done.
        """
        if self.state == STATE_STOPPED:
            raise SchedulerNotRunningError
        loop = self._eventloop
        if loop is None or loop.is_closed() or not loop.is_running() or on_loop(loop):
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
        coordinator = self._detach_coordination()
        batches = self._stop_executors_now()
        with self._jobstores_lock:
            self._keep_memory_jobs()
        stores = list(self._jobstores.values())
        timeout = self.shutdown_timeout if wait else None
        close = self._close(batches, stores, self._generation, timeout, coordinator)
        if loop is not None and loop.is_running():
            self._closing = loop.create_task(close)
        else:
            close.close()
            if coordinator is not None:
                coordinator.abandon()
            for batch in batches:
                batch.pool.shutdown(wait=False, cancel_futures=True)
            self._close_stores(stores)
            if self.history is not None:
                self.history.close_now()
        logger.info("Scheduler stopped: no new runs; running jobs get to finish")
        self._dispatch_event(SchedulerEvent(EVENT_SCHEDULER_SHUTDOWN))

    async def _close(
        self,
        batches: list[Batch],
        stores: list[Any],
        generation: int,
        timeout: float | None,
        coordinator: Coordinator | None,
    ) -> None:
        # Leadership first: a standby takes over while the last runs here finish.
        await self._stop_coordination(coordinator)
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
            if self.history is not None and not self._undrained:
                await self.history.release(HOLDER)  # after the drain: all recorded
            elif self.history is not None:
                # The runs go on as long as they like; their ends are recorded, then the
                # history is let go (aclose() at the end of serving drains them sooner).
                waiter = asyncio.ensure_future(self._release_when_done(generation))
                self._reports.add(waiter)
                waiter.add_done_callback(self._reports.discard)
        logger.info("Scheduler shut down")

    async def _release_when_done(self, generation: int) -> None:
        tasks = {task for batch in self._undrained for task in batch.tasks}
        if tasks:
            await asyncio.wait(tasks)
        settled = all(not batch.tasks for batch in self._undrained)
        if self._generation == generation and self.state == STATE_STOPPED and settled:
            self._undrained = []
            if self.history is not None:
                await self.history.release(HOLDER)

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
            if self.history is not None and self.state == STATE_STOPPED:
                await self.history.release(HOLDER)
        if self._reports:
            await asyncio.wait(set(self._reports), timeout=CANCEL_GRACE)


id_of = id  # add_job's `id` parameter shadows the builtin


def _state(job: Job) -> bytes:
    """What a job store keeps of a job, as bytes to compare."""
    state = job.__getstate__()
    state.pop("version", None)
    state["trigger"] = _trigger_state(state["trigger"])
    return pickle.dumps(state)


def _trigger_state(trigger: BaseTrigger) -> bytes:
    """A trigger as bytes to compare with a declaration of it. An interval trigger's
    start is "now" when it is declared without one: each process starting has its own,
    and a restart must keep the stored one (the job's schedule), so it is left out."""
    state = trigger.__getstate__()
    if isinstance(trigger, IntervalTrigger):
        state = dict(state)
        state.pop("start_date", None)
    return pickle.dumps(state)


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
