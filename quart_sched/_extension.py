"""The Quart extension: Flask-APScheduler's ``APScheduler`` class, on the serving loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import fnmatch
import importlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.events import EVENT_ALL
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.util import obj_to_ref

from ._config import (
    DEFAULT_API_PREFIX,
    DEFAULT_ENDPOINT_PREFIX,
    SchedulerConfig,
    load_config,
)
from ._history import RunPage, RunRecorder, make_recorder
from ._jobs import fix_job_def, pop_trigger
from ._scheduler import QuartScheduler
from ._service import SchedulerService
from ._stores import store_error
from .errors import (
    FunctionNotAllowedError,
    HistoryUnavailableError,
    JobLookupError,
    QuartSchedError,
    SchedulerAlreadyRunningError,
    SchedulerNotRunningError,
    ValidationError,
)

if TYPE_CHECKING:
    from apscheduler.job import Job
    from quart import Quart

logger = logging.getLogger("quart_sched")

EXTENSION_KEY = "apscheduler"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: The keys of a job's ``last_run`` in the API's job JSON.

# Packages whose exceptions mean "the job store cannot be reached", not "bad request".


class Plan(enum.Enum):
    """What the app's serving means for the scheduler: the extension's start/stop state."""

    #: Nothing: stopped, or started by the user inside a running loop (the user's to stop).
    NONE = "none"
    #: ``start()`` was called outside a running loop: start when the app serves.
    START_WHEN_SERVING = "start_when_serving"
    #: Serving stopped a scheduler it had started: start again when the app serves again
    #: (``test_app()`` twice, app factories).
    RESTART_WHEN_SERVING = "restart_when_serving"
    #: Running since the app began serving; stopped (and due again) when serving stops.
    STARTED_BY_SERVING = "started_by_serving"


@dataclass
class ServingPlan:
    """The one place that decides what ``before_serving``/``after_serving`` do.

    Its transitions are its methods; ``paused`` is the state a start due later starts in.
    """

    plan: Plan = Plan.NONE
    paused: bool = False

    def request_start(self, paused: bool) -> None:
        """``start()`` outside a running loop."""
        self.plan, self.paused = Plan.START_WHEN_SERVING, paused

    def take_start(self) -> bool | None:
        """At ``before_serving``: the ``paused`` to start with, or None to stay stopped."""
        if self.plan not in (Plan.START_WHEN_SERVING, Plan.RESTART_WHEN_SERVING):
            return None
        self.plan = Plan.STARTED_BY_SERVING
        return self.paused

    def serving_stopped(self, running: bool, *, paused: bool) -> None:
        """At ``after_serving``: a scheduler serving started is due again next time; a
        start() made inside a running loop (a before_serving hook of the user's) is the
        user's to repeat."""
        if self.plan is Plan.STARTED_BY_SERVING and running:
            self.plan, self.paused = Plan.RESTART_WHEN_SERVING, paused
        else:
            self.plan = Plan.NONE

    def cancel(self) -> bool:
        """Forget any start due later (``shutdown()``, a start now, another app); True if
        one was due."""
        due = self.plan in (Plan.START_WHEN_SERVING, Plan.RESTART_WHEN_SERVING)
        self.plan = Plan.NONE
        return due


class APScheduler:
    """Runs APScheduler jobs in a Quart app, on the loop that serves it.

    A drop-in for Flask-APScheduler's class of the same name::

        app = Quart(__name__)
        app.config.from_object(Config)          # JOBS, SCHEDULER_* keys
        scheduler = APScheduler()
        scheduler.init_app(app)
        scheduler.start()                       # before app.run(): starts when serving
        app.run()

    ``start()`` outside a running event loop (at import time, under
    ``hypercorn module:app``) starts the scheduler when the app begins serving; when
    serving stops, running jobs get ``SCHEDULER_SHUTDOWN_TIMEOUT`` seconds to finish.
    """

    def __init__(self, scheduler: Any = None, app: Quart | None = None) -> None:
        self._scheduler: QuartScheduler = (
            QuartScheduler() if scheduler is None else QuartScheduler.adopt(scheduler)
        )
        self._host_name = socket.gethostname().lower()
        self._authentication_callback: Callable[..., Any] | None = None
        self._serving = ServingPlan()
        #: What the REST API, the dashboard and the CLI call (job JSON, validation, ...).
        self.service = SchedulerService(self)
        self._config: SchedulerConfig | None = None
        self._api_functions: set[str] = set()
        self.allowed_hosts: list[str] = ["*"]
        self.auth: Any = None
        self.api_enabled = False
        self.api_prefix = DEFAULT_API_PREFIX
        self.endpoint_prefix = DEFAULT_ENDPOINT_PREFIX
        self.app: Quart | None = None
        if app is not None:
            self.init_app(app)

    # properties -----------------------------------------------------------------------

    @property
    def host_name(self) -> str:
        """This machine's host name, lower-cased, as matched against allowed hosts."""
        return self._host_name

    @property
    def running(self) -> bool:
        """True while the scheduler runs (paused included)."""
        return bool(self._scheduler.running)

    @property
    def is_leader(self) -> bool:
        """Whether this process runs the jobs now.

        With ``SCHEDULER_COORDINATION`` on (the default), the processes serving the app
        elect one leader that runs every job; the others are standbys that serve the API.
        False while the scheduler is stopped; with coordination off, True while it runs.
        """
        return self._scheduler.is_leader

    async def leadership(self) -> dict[str, Any]:
        """This process's ``role`` (``"leader"``, ``"standby"``, or None when stopped), the
        ``leader`` (host, pid, since, epoch; None if nobody leads) and the ``coordination``
        backend (None when off), as ``GET <prefix>`` shows them. Waits for the first
        election of a scheduler just started."""
        await self._scheduler.coordination_started()
        return await self._scheduler.leadership_info()

    @property
    def state(self) -> int:
        """``STATE_STOPPED``, ``STATE_RUNNING`` or ``STATE_PAUSED``."""
        return int(self._scheduler.state)

    @property
    def scheduler(self) -> QuartScheduler:
        """The underlying APScheduler ``AsyncIOScheduler``."""
        return self._scheduler

    @property
    def task(self) -> Callable[..., Callable[[F], F]]:
        """APScheduler's ``scheduled_job`` decorator::

        @scheduler.task("interval", id="do_job_1", seconds=30)
        async def job1(): ...

        Jobs declared before ``init_app`` still get ``SCHEDULER_TIMEZONE``.
        """

        def task(*args: Any, **kwargs: Any) -> Callable[[F], F]:
            schedule = self._scheduler.scheduled_job(*args, **kwargs)

            def decorator(func: F) -> F:
                self._allow(func)
                scheduled: F = schedule(func)
                return scheduled

            return decorator

        return task

    @property
    def config(self) -> SchedulerConfig | None:
        """The settings read by ``init_app``."""
        return self._config

    # app wiring -----------------------------------------------------------------------

    def init_app(self, app: Quart) -> None:
        """Read the app's ``SCHEDULER_*`` config, add its jobs and hook its serving."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "An APScheduler is already registered on this app. Use that instance "
                "(app.extensions['apscheduler']) instead of creating another."
            )
        if self.app is not None and self.running:
            raise RuntimeError(
                "This APScheduler is running for another app. Shut it down first, or give "
                "each app its own APScheduler()."
            )
        config = load_config(
            app.config,
            instance_path=app.instance_path,
            api_enabled=self.api_enabled,
            api_prefix=self.api_prefix,
            endpoint_prefix=self.endpoint_prefix,
            allowed_hosts=self.allowed_hosts,
            auth=self.auth,
        )
        self._config = config
        if config.host_name is not None:
            self._host_name = config.host_name
        self.api_enabled = config.api_enabled
        self.api_prefix = config.api_prefix
        self.endpoint_prefix = config.endpoint_prefix
        self.allowed_hosts = list(config.allowed_hosts)
        self.auth = config.auth

        if self.app is not None and self.app is not app:
            # A start due when the previous app served belonged to that app.
            self._serving.cancel()
        self.app = app
        app.extensions[EXTENSION_KEY] = self
        app.apscheduler = self  # type: ignore[attr-defined]  # Flask-APScheduler's name
        self._scheduler.app = app
        self._scheduler.shutdown_timeout = config.shutdown_timeout
        self._scheduler.history = (
            make_recorder(
                config.history,
                keep_runs=config.history_keep_runs,
                keep_days=config.history_keep_days,
                host=self.host_name,
            )
            if config.history
            else None
        )
        self._scheduler.apply_options(config.scheduler_options)
        self._scheduler.coordination_setting = config.coordination
        self._scheduler.coordination_app = (app.import_name, app.instance_path)
        self._scheduler.rerun_interrupted = config.rerun_interrupted
        self._scheduler.claim_ahead = timedelta(seconds=config.claim_ahead)
        self._scheduler.host_name = self.host_name

        for job in config.jobs:
            definition = dict(job)
            definition.setdefault("replace_existing", True)
            self.add_job(**definition)

        if config.api_enabled:
            from .api import register_api

            register_api(self, app)

        if "scheduler" not in app.cli.commands:
            from ._cli import scheduler_cli  # lazily: serving never needs click's commands

            app.cli.add_command(scheduler_cli)

        app.before_serving(self._make_before_serving(app))
        app.after_serving(self._make_after_serving(app))

    def _make_before_serving(self, app: Quart) -> Callable[[], Any]:
        async def start_scheduler() -> None:
            if self.app is not app:
                return
            history = self._scheduler.history
            if history is not None:  # open while the app serves, whatever the scheduler does
                history.hold("serving")
            if not self.running:
                paused = self._serving.take_start()
                if paused is not None:
                    self._scheduler.start(paused=paused)
            # Serving starts once this process knows whether it leads.
            await self._scheduler.coordination_started()

        return start_scheduler

    def _make_after_serving(self, app: Quart) -> Callable[[], Any]:
        async def stop_scheduler() -> None:
            if self.app is not app:
                return
            self._serving.serving_stopped(self.running, paused=self.state == STATE_PAUSED)
            await self._scheduler.aclose()
            if self._scheduler.history is not None:
                await self._scheduler.history.release("serving")  # after the drain

        return stop_scheduler

    # lifecycle --------------------------------------------------------------------------

    def start(self, paused: bool = False) -> None:
        """Start the scheduler; outside a running loop, as soon as the app serves.

        :param paused: if True, don't run jobs until :meth:`resume` is called.
        """
        if not self._host_allowed():
            logger.info(
                "Host %r is not in SCHEDULER_ALLOWED_HOSTS (%s): not starting the scheduler",
                self.host_name,
                ", ".join(self.allowed_hosts),
            )
            return
        if self.running or self._serving.plan is Plan.START_WHEN_SERVING:
            raise SchedulerAlreadyRunningError
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._serving.request_start(paused)
            logger.debug("No running event loop: the scheduler starts when the app serves")
            return
        self._serving.cancel()
        self._scheduler.start(paused=paused)

    def _host_allowed(self) -> bool:
        return "*" in self.allowed_hosts or self.host_name in self.allowed_hosts

    def shutdown(self, wait: bool = True) -> None:
        """Shut the scheduler down; ``state`` is stopped when this returns.

        Running jobs are not interrupted; with ``wait`` they get
        ``SCHEDULER_SHUTDOWN_TIMEOUT`` seconds to finish before the job stores close.
        A start waiting for the app to serve is cancelled.

        :raises SchedulerNotRunningError: if the scheduler is neither running nor due to start
        """
        pending = self._serving.cancel()
        if pending and not self.running:
            return
        self._scheduler.shutdown(wait)

    def pause(self) -> None:
        """Stop running jobs until :meth:`resume`; running ones go on."""
        self._scheduler.pause()

    def resume(self) -> None:
        """Resume running jobs."""
        self._scheduler.resume()

    def add_listener(self, callback: Callable[[Any], Any], mask: int = EVENT_ALL) -> None:
        """Call ``callback(event)`` for the APScheduler events in ``mask``."""
        self._scheduler.add_listener(callback, mask)

    def remove_listener(self, callback: Callable[[Any], Any]) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        self._scheduler.remove_listener(callback)

    # jobs -------------------------------------------------------------------------------

    def add_job(self, id: str, func: Any, **kwargs: Any) -> Job:
        """Add a job; ``name`` defaults to ``id``.

        ``func`` is a callable or a ``"module:function"`` string. ISO 8601 strings are
        accepted for ``start_date``, ``end_date`` and ``run_date``::

            scheduler.add_job("report", "app.jobs:report", trigger="cron", hour=6)
        """
        job_def = dict(kwargs)
        job_def["id"] = id
        job_def["func"] = func
        job_def["name"] = job_def.get("name") or id
        fix_job_def(job_def)
        job = self._scheduler.add_job(**job_def)
        self._allow(job.func_ref)
        return job

    def remove_job(self, id: str, jobstore: str | None = None) -> None:
        """Remove a job; raises ``JobLookupError`` if there is none with that id."""
        self._scheduler.remove_job(id, jobstore)

    def remove_all_jobs(self, jobstore: str | None = None) -> None:
        """Remove every job, of one job store or of all."""
        self._scheduler.remove_all_jobs(jobstore)

    def get_job(self, id: str, jobstore: str | None = None) -> Job | None:
        """The job with this id, or None."""
        job: Job | None = self._scheduler.get_job(id, jobstore)
        return job

    def get_jobs(self, jobstore: str | None = None) -> list[Job]:
        """Every job, pending ones included before the scheduler starts."""
        jobs: list[Job] = self._scheduler.get_jobs(jobstore)
        return jobs

    def modify_job(self, id: str, jobstore: str | None = None, **changes: Any) -> Job:
        """Change a job's properties; a new ``trigger`` (with its arguments) reschedules it.

        The change is applied in one write: a bad trigger argument changes nothing.
        """
        fix_job_def(changes)
        if "trigger" in changes:
            trigger, trigger_args = pop_trigger(changes)
            built = self._scheduler.make_trigger(trigger, trigger_args)
            changes["trigger"] = built
            changes["next_run_time"] = built.get_next_fire_time(
                None, datetime.now(self._scheduler.timezone)
            )
        return self._scheduler.modify_job(id, jobstore, **changes)

    def pause_job(self, id: str, jobstore: str | None = None) -> Job:
        """Pause a job until :meth:`resume_job`."""
        job: Job = self._scheduler.pause_job(id, jobstore)
        return job

    def resume_job(self, id: str, jobstore: str | None = None) -> Job | None:
        """Resume a paused job (a finished schedule removes it)."""
        job: Job | None = self._scheduler.resume_job(id, jobstore)
        return job

    def run_job(
        self, id: str, jobstore: str | None = None
    ) -> asyncio.Future[Any] | concurrent.futures.Future[Any]:
        """Run a job once now, through its executor, with the app context and listeners.

        Returns a future yielding the job's return value (or raising its exception);
        ignore it to let the run go on in the background. ``max_instances`` is honoured.
        Called on the serving loop (async code), it is an ``asyncio.Future`` to ``await``::

            result = await scheduler.run_job("report")

        Called from another thread, such as a plain ``def`` view (Quart runs those in a
        thread), the run is handed to the serving loop and it is a
        ``concurrent.futures.Future``; ``result()`` blocks that thread until the run ends::

            @app.post("/report")
            def run_report():
                return {"result": scheduler.run_job("report").result(timeout=60)}

        :raises JobLookupError: if there is no such job
        :raises SchedulerNotRunningError: if the scheduler is not running
        :raises MaxInstancesReachedError: if ``max_instances`` runs are going already
        """
        if not (self.running or self._scheduler.stores_open):
            # Before the lookup: once shut down, APScheduler finds only pending jobs, and a
            # job of a persistent store would seem not to exist.
            raise SchedulerNotRunningError
        job = self.get_job(id, jobstore)
        if job is None:
            raise JobLookupError(id)
        if self._scheduler.on_its_loop():
            return self.submit_run(job)
        return self._scheduler.run_job_threadsafe(job)

    # awaitable twins: the same calls, waiting on a persistent store in a worker thread --

    async def aadd_job(self, id: str, func: Any, **kwargs: Any) -> Job:
        """:meth:`add_job` for async code: never blocks the loop on the job store."""
        return await self.offload(self.add_job, id, func, **kwargs)

    async def aget_job(self, id: str, jobstore: str | None = None) -> Job | None:
        """:meth:`get_job` for async code."""
        return await self.offload(self.get_job, id, jobstore)

    async def aget_jobs(self, jobstore: str | None = None) -> list[Job]:
        """:meth:`get_jobs` for async code."""
        return await self.offload(self.get_jobs, jobstore)

    async def amodify_job(self, id: str, jobstore: str | None = None, **changes: Any) -> Job:
        """:meth:`modify_job` for async code."""
        return await self.offload(self.modify_job, id, jobstore, **changes)

    async def apause_job(self, id: str, jobstore: str | None = None) -> Job:
        """:meth:`pause_job` for async code."""
        return await self.offload(self.pause_job, id, jobstore)

    async def aresume_job(self, id: str, jobstore: str | None = None) -> Job | None:
        """:meth:`resume_job` for async code."""
        return await self.offload(self.resume_job, id, jobstore)

    async def aremove_job(self, id: str, jobstore: str | None = None) -> None:
        """:meth:`remove_job` for async code."""
        await self.offload(self.remove_job, id, jobstore)

    async def aremove_all_jobs(self, jobstore: str | None = None) -> None:
        """:meth:`remove_all_jobs` for async code."""
        await self.offload(self.remove_all_jobs, jobstore)

    def submit_run(self, job: Job) -> asyncio.Future[Any]:
        """:meth:`run_job` for a job already looked up (no job-store I/O), on the loop."""
        return self._scheduler.run_job_now(job)  # SchedulerNotRunningError when stopped

    @contextlib.asynccontextmanager
    async def open_stores(self) -> AsyncIterator[APScheduler]:
        """Reach the job stores and the run history without starting the scheduler.

        What ``quart scheduler`` does to steer jobs that another process (the server, a
        worker) runs from the same persistent job store::

            async with scheduler.open_stores():
                scheduler.pause_job("report")      # written to the store
                await scheduler.run_job("report")  # runs here, recorded in the history

        Inside, job methods read and write the stores; nothing runs on its own; jobs
        declared in code or config are not written over the stored ones. Jobs of
        in-memory stores are those this process declared, and changing them raises
        :class:`JobStoreUnavailableError`. On exit, runs started inside get
        ``SCHEDULER_SHUTDOWN_TIMEOUT`` seconds to finish.

        :raises SchedulerAlreadyRunningError: if the scheduler runs in this process
        """
        if self.running:
            raise SchedulerAlreadyRunningError
        try:
            self._scheduler.open_stores()
        except QuartSchedError:
            raise
        except Exception as exc:
            error = store_error(exc)
            if error is exc:
                raise
            raise error from exc
        history = self._scheduler.history
        try:
            if history is not None:
                history.hold("steering")
            yield self
        finally:
            await self._scheduler.close_stores()
            if history is not None:
                await history.release("steering")  # after the runs: their ends are recorded

    def probe_stores(self) -> dict[str, tuple[str, str | None]]:
        """Inside :meth:`open_stores`: each job store's alias -> (its class name, why it
        cannot be reached or None when it answers). Loads no job."""
        return self._scheduler.probe_stores()

    # auth -------------------------------------------------------------------------------

    def authenticate(self, func: F) -> F:
        """Register the callback that checks API credentials (sync or ``async``)::

        @scheduler.authenticate
        def check(auth):
            return auth["username"] == "guest" and auth["password"] == "guest"
        """
        self._authentication_callback = func
        return func

    async def check_credentials(self, credentials: Any) -> bool:
        """Whether the API may serve a request with these credentials.

        The :meth:`authenticate` callback decides (sync ones run in a thread); without
        one, a scheme holding credentials (``HTTPBasicAuth(users=...)``) checks them.
        """
        callback = self._authentication_callback
        if callback is None:
            verify = getattr(self.auth, "verify", None)
            return bool(verify(credentials)) if verify is not None else False
        assert self.app is not None
        return bool(await self.app.ensure_async(callback)(credentials))

    # REST API support ---------------------------------------------------------------

    @property
    def api_run_timeout(self) -> float:
        """Seconds ``POST /jobs/<id>/run`` waits for the run (``SCHEDULER_API_RUN_TIMEOUT``)."""
        return self._config.api_run_timeout if self._config else 30.0

    @property
    def api_min_interval(self) -> float:
        """The fewest seconds between two fires of a trigger the API creates or changes
        (``SCHEDULER_API_MIN_INTERVAL``; 0: no floor)."""
        return self._config.api_min_interval if self._config else 1.0

    @property
    def api_trusted_hosts(self) -> tuple[str, ...] | None:
        """The ``Host`` names the API answers (``SCHEDULER_API_TRUSTED_HOSTS``), None for any."""
        return self._config.api_trusted_hosts if self._config else None

    def api_function(self, func: F) -> F:
        """Let the REST API schedule ``func`` (usable as a decorator)::

        @scheduler.api_function
        async def send_report(recipient): ...
        """
        self._allow(func)
        return func

    def _allow(self, func: Any) -> None:
        if func is None:
            return  # a job whose function has no reference (lambda, nested function)
        try:
            ref = func if isinstance(func, str) else obj_to_ref(func)
        except (ValueError, TypeError):
            return  # lambdas and nested functions have no reference to allow
        if ref:
            self._api_functions.add(ref)

    def api_function_allowed(self, ref: str) -> bool:
        """Whether the API may schedule ``"module:qualname"``: a job's function defined in
        code or config, one registered with :meth:`api_function`, or one matching a glob
        of ``SCHEDULER_API_ALLOWED_FUNCS``. Decided without importing anything.

        A glob reaches a private name (a part starting with ``_``, ``__main__`` included)
        only when the pattern spells that part out: ``"app.jobs:*"`` does not allow
        ``"app.jobs:_helper"``, ``"app.jobs:_*"`` does."""
        if ref in self._api_functions:
            return True
        patterns = self._config.api_allowed_funcs if self._config else ()
        return any(_glob_allows(pattern, ref) for pattern in patterns)

    async def resolve_api_function(self, ref: str) -> Callable[..., Any]:
        """The function ``ref`` names, if the API may schedule it.

        The allowlist is checked before anything is imported. Then only the module before
        the colon is imported (in a worker thread: its import-time code must not stall the
        loop), and the rest is looked up with ``getattr``, so a reference never imports a
        submodule it names. A glob allows the functions *defined* in the modules it
        matches, not what they import: ``"app.jobs:*"`` must not reach
        ``"app.jobs:os.system"``.

        :raises FunctionNotAllowedError: if the API may not schedule ``ref``
        :raises ValidationError: (field ``func``) if it cannot be imported or found
        """
        if not self.api_function_allowed(ref):
            logger.warning("Refused to schedule %r over the API: not allowed", ref)
            raise FunctionNotAllowedError(ref)
        target = await asyncio.to_thread(_resolve_reference, ref)
        module, _, qualname = ref.partition(":")
        if ref not in self._api_functions and (
            getattr(target, "__module__", None) != module
            or getattr(target, "__qualname__", None) != qualname
        ):
            logger.warning("Refused to schedule %r over the API: not defined there", ref)
            raise FunctionNotAllowedError(ref)
        if not callable(target):
            raise ValidationError("func", f"func {ref!r} is not a function")
        return target  # type: ignore[no-any-return]

    def api_functions(self) -> dict[str, list[str]]:
        """What the API may schedule: exact references and glob patterns."""
        patterns = list(self._config.api_allowed_funcs) if self._config else []
        return {"functions": sorted(self._api_functions), "patterns": patterns}

    # the service behind the REST API, the dashboard and the CLI -------------------------

    async def jobs_to_dicts(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Jobs as ``GET /jobs`` lists them (see :class:`SchedulerService`)."""
        return await self.service.jobs_to_dicts(jobs)

    def job_to_dict(self, job: Job) -> dict[str, Any]:
        """A job as the REST API shows it (Flask-APScheduler's keys and order, then ours)."""
        return self.service.job_to_dict(job)

    def next_run_times(self, job: Job, n: int, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times of ``job``, after ``after`` (default: now)::

        scheduler.next_run_times(job, 3, after=datetime(2026, 10, 31, 12, 0))
        """
        return self.service.next_run_times(job, n, after)

    async def offload(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call a scheduler method without blocking the loop on job-store I/O; a store
        that cannot be reached raises :class:`JobStoreUnavailableError`."""
        return await self.service.offload(func, *args, **kwargs)

    # run history --------------------------------------------------------------------

    @property
    def history(self) -> RunRecorder | None:
        """Where runs are recorded (``SCHEDULER_HISTORY``), or None when it is off."""
        return self._scheduler.history

    def _open_history(self) -> RunRecorder:
        history = self._scheduler.history
        if history is None:
            raise HistoryUnavailableError("run history is off (SCHEDULER_HISTORY = False)")
        return history

    async def get_runs(
        self,
        job_id: str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        outcome: str | list[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RunPage:
        """Recorded runs, newest first, of one job or of all::

            page = await scheduler.get_runs("report", outcome="error", limit=20)
            for run in page.runs:
                print(run["started_at"], run["error"])
            older = await scheduler.get_runs("report", cursor=page.next_cursor)

        ``outcome`` is one or several of success, error, missed, skipped, interrupted,
        running; ``since``/``until`` bound the start time.

        :raises HistoryUnavailableError: if history is off or its file cannot be read
        """
        return await self._open_history().runs(
            job_id, limit=limit, cursor=cursor, outcome=outcome, since=since, until=until
        )

    async def get_running_runs(self) -> list[dict[str, Any]]:
        """The runs under way now, as recorded."""
        return await self._open_history().running()

    async def get_last_runs(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The latest recorded run of each of ``job_ids`` that has one."""
        return await self._open_history().last_runs(job_ids)


def _glob_allows(pattern: str, ref: str) -> bool:
    """``fnmatch`` of ``ref`` against ``pattern``, where a private part of ``ref`` must be
    spelled out by a part of the pattern that starts with ``_`` too."""
    if not fnmatch.fnmatchcase(ref, pattern):
        return False
    private = [part for part in re.split(r"[.:]", ref) if part.startswith("_")]
    if not private:
        return True
    named = [part for part in re.split(r"[.:]", pattern) if part.startswith("_")]
    return all(any(fnmatch.fnmatchcase(part, name) for name in named) for part in private)


def _resolve_reference(ref: str) -> Any:
    """Import the module before the colon and walk the rest with ``getattr``.

    Unlike APScheduler's ``ref_to_obj``, which imports ``pkg.mod.attr`` when ``attr`` is a
    submodule, nothing but the named module is imported. Whatever its import raises,
    ``SystemExit`` included, becomes a :class:`ValidationError`: a client's request must
    not end the worker.
    """
    module_name, _, qualname = ref.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except BaseException as exc:  # SystemExit from a module must not end the worker
        raise ValidationError(
            "func", f"func {ref!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from None
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except BaseException:  # a module's __getattr__ may raise anything
            raise ValidationError(
                "func", f"func {ref!r} cannot be found: {module_name} has no {qualname!r}"
            ) from None
    return target
