"""The Quart extension: Flask-APScheduler's ``APScheduler`` class, on the serving loop."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import socket
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.events import EVENT_ALL
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.util import obj_to_ref, ref_to_obj

from . import _json
from ._config import (
    DEFAULT_API_PREFIX,
    DEFAULT_ENDPOINT_PREFIX,
    SchedulerConfig,
    load_config,
)
from ._describe import describe_trigger
from ._history import RunHistory, RunPage
from ._jobs import fix_job_def, pop_trigger
from ._scheduler import QuartScheduler
from .errors import (
    FunctionNotAllowedError,
    HistoryUnavailableError,
    JobLookupError,
    JobStoreUnavailableError,
    QuartSchedError,
    SchedulerAlreadyRunningError,
    SchedulerNotRunningError,
)

if TYPE_CHECKING:
    from apscheduler.job import Job
    from quart import Quart

logger = logging.getLogger("quart_sched")

EXTENSION_KEY = "apscheduler"
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Packages whose exceptions mean "the job store cannot be reached", not "bad request".
_STORE_ERROR_MODULES = ("sqlalchemy", "sqlite3", "redis", "pymongo", "psycopg", "kazoo", "etcd")


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
        # The `paused` of a start() due when the app serves: asked for by start() outside a
        # loop, or remembered when serving stopped a running scheduler.
        self._start_requested: bool | None = None
        self._restart_on_serve: bool | None = None
        self._started_by_serving = False
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
        self.api_enabled = config.api_enabled
        self.api_prefix = config.api_prefix
        self.endpoint_prefix = config.endpoint_prefix
        self.allowed_hosts = list(config.allowed_hosts)
        self.auth = config.auth

        if self.app is not None and self.app is not app:
            # A start due when the previous app served belonged to that app.
            self._start_requested = self._restart_on_serve = None
        self.app = app
        app.extensions[EXTENSION_KEY] = self
        app.apscheduler = self  # type: ignore[attr-defined]  # Flask-APScheduler's name
        self._scheduler.app = app
        self._scheduler.shutdown_timeout = config.shutdown_timeout
        self._scheduler.history = (
            RunHistory(
                config.history,
                keep_runs=config.history_keep_runs,
                keep_days=config.history_keep_days,
                host=self.host_name,
            )
            if config.history
            else None
        )
        self._scheduler.apply_options(config.scheduler_options)

        for job in config.jobs:
            definition = dict(job)
            definition.setdefault("replace_existing", True)
            self.add_job(**definition)

        if config.api_enabled:
            from .api import register_api

            register_api(self, app)

        app.before_serving(self._make_before_serving(app))
        app.after_serving(self._make_after_serving(app))

    def _make_before_serving(self, app: Quart) -> Callable[[], Any]:
        async def start_scheduler() -> None:
            if self.app is not app:
                return
            history = self._scheduler.history
            if history is not None:  # open while the app serves, whatever the scheduler does
                self._scheduler.keep_history_open = True
                history.start()
            if self.running:
                return
            paused = self._start_requested
            if paused is None:
                paused = self._restart_on_serve
            self._start_requested = self._restart_on_serve = None
            if paused is not None:
                self._scheduler.start(paused=paused)
                self._started_by_serving = True

        return start_scheduler

    def _make_after_serving(self, app: Quart) -> Callable[[], Any]:
        async def stop_scheduler() -> None:
            if self.app is not app:
                return
            if self.running and self._started_by_serving:
                # start() asked for "when the app serves": that holds for the next serve
                # too (test_app again, app factories). A start() made inside a running loop
                # (a before_serving hook of the user's) is the user's to repeat.
                self._restart_on_serve = self.state == STATE_PAUSED
            self._started_by_serving = False
            await self._scheduler.aclose()
            self._scheduler.keep_history_open = False
            if self._scheduler.history is not None:
                await self._scheduler.history.aclose()  # after the drain: all recorded

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
        if self.running or self._start_requested is not None:
            raise SchedulerAlreadyRunningError
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._start_requested = paused
            logger.debug("No running event loop: the scheduler starts when the app serves")
            return
        self._restart_on_serve = None
        self._started_by_serving = False
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
        pending = self._start_requested is not None or self._restart_on_serve is not None
        self._start_requested = self._restart_on_serve = None
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

    def run_job(self, id: str, jobstore: str | None = None) -> asyncio.Future[Any]:
        """Run a job once now, through its executor, with the app context and listeners.

        Returns a future: ``await`` it for the job's return value (or its exception), or
        ignore it to run in the background. ``max_instances`` is honoured.

        :raises JobLookupError: if there is no such job
        :raises SchedulerNotRunningError: if the scheduler is not running
        """
        job = self.get_job(id, jobstore)
        if job is None:
            raise JobLookupError(id)
        return self.submit_run(job)

    def submit_run(self, job: Job) -> asyncio.Future[Any]:
        """:meth:`run_job` for a job already looked up: no job-store I/O."""
        if not self.running:
            raise SchedulerNotRunningError
        return self._scheduler.run_job_now(job)

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
        of ``SCHEDULER_API_ALLOWED_FUNCS``. Decided without importing anything."""
        if ref in self._api_functions:
            return True
        patterns = self._config.api_allowed_funcs if self._config else ()
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in patterns)

    def check_api_function(self, ref: str) -> None:
        """Raise :class:`FunctionNotAllowedError` unless the API may schedule ``ref``.

        A glob allows the functions *defined* in the modules it matches, not what they
        import: ``"app.jobs:*"`` must not reach ``"app.jobs:os.system"``. So a reference
        allowed only by a glob is resolved (importing that allowed module) and must name
        the function where it is defined.
        """
        if ref in self._api_functions:
            return
        if not self.api_function_allowed(ref):
            logger.warning("Refused to schedule %r over the API: not allowed", ref)
            raise FunctionNotAllowedError(ref)
        module, _, qualname = ref.partition(":")
        try:
            target = ref_to_obj(ref)
        except LookupError:
            return  # not importable: add_job reports it as a bad func
        if (
            getattr(target, "__module__", None) != module
            or getattr(target, "__qualname__", None) != qualname
        ):
            logger.warning("Refused to schedule %r over the API: not defined there", ref)
            raise FunctionNotAllowedError(ref)

    def api_functions(self) -> dict[str, list[str]]:
        """What the API may schedule: exact references and glob patterns."""
        patterns = list(self._config.api_allowed_funcs) if self._config else []
        return {"functions": sorted(self._api_functions), "patterns": patterns}

    def job_to_dict(self, job: Job) -> dict[str, Any]:
        """A job as the REST API shows it (Flask-APScheduler's keys and order)."""
        data = _json.job_to_dict(
            job, self._scheduler.job_defaults, datetime.now(self._scheduler.timezone)
        )
        data["running_instances"] = self._scheduler.running_instances(job.id)
        data["trigger_description"] = describe_trigger(job.trigger)
        return data

    def next_run_times(self, job: Job, n: int) -> list[datetime]:
        """The next ``n`` fire times of ``job``'s trigger, in the trigger's time zone; a
        paused job's are those it would have if resumed now."""
        now = datetime.now(self._scheduler.timezone)
        times: list[datetime] = []
        previous = None
        try:
            current = job.next_run_time or job.trigger.get_next_fire_time(None, now)
        except (OverflowError, ValueError):
            return times
        while current is not None and len(times) < n:
            times.append(current)
            previous = current
            try:
                current = job.trigger.get_next_fire_time(previous, previous)
            except (OverflowError, ValueError):  # the calendar ends at year 9999
                break
            if current is not None and current <= previous:
                break
        return times

    async def offload(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call a scheduler method without blocking the loop on job-store I/O.

        Runs it directly when every job store is in memory, in a worker thread
        otherwise. A store that cannot be reached raises
        :class:`JobStoreUnavailableError`.
        """
        try:
            if self._scheduler.memory_only:
                return func(*args, **kwargs)
            return await asyncio.to_thread(func, *args, **kwargs)
        except (QuartSchedError, LookupError, ConflictingIdError, ValueError, TypeError):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) or type(exc).__module__.startswith(_STORE_ERROR_MODULES):
                raise JobStoreUnavailableError(
                    f"the job store cannot be reached ({type(exc).__name__}); try again later"
                ) from exc
            raise

    # run history --------------------------------------------------------------------

    @property
    def history(self) -> RunHistory | None:
        """Where runs are recorded (``SCHEDULER_HISTORY``), or None when it is off."""
        return self._scheduler.history

    def _open_history(self) -> RunHistory:
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
