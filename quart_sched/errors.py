"""The exceptions quart_sched raises, and APScheduler's that users catch alongside them."""

from __future__ import annotations

from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers import SchedulerAlreadyRunningError, SchedulerNotRunningError

__all__ = [
    "ConfigurationError",
    "ConflictingIdError",
    "FunctionNotAllowedError",
    "HistoryUnavailableError",
    "JobLookupError",
    "JobNotLoadableError",
    "JobNotStorableError",
    "JobStoreUnavailableError",
    "MaxInstancesReachedError",
    "QuartSchedError",
    "SchedulerAPIError",
    "SchedulerAlreadyRunningError",
    "SchedulerNotRunningError",
    "ValidationError",
]


class QuartSchedError(Exception):
    """Base class of the errors raised by quart_sched itself."""


class ConfigurationError(QuartSchedError, ValueError):
    """A ``SCHEDULER_*`` setting has a value quart_sched cannot use."""


class JobNotStorableError(QuartSchedError, ValueError):
    """A job's function, arguments or trigger cannot be written to its persistent job store.

    ``culprit`` names what could not be stored: ``"func"``, ``"args[1]"``, ``"kwargs['x']"``
    or ``"trigger"``.
    """

    def __init__(self, job_id: str, culprit: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.culprit = culprit


class ValidationError(QuartSchedError, ValueError):
    """A client sent a job definition quart_sched will not accept; ``field`` names why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FunctionNotAllowedError(QuartSchedError, PermissionError):
    """The REST API was asked to schedule a function it may not (see the allowlist)."""

    def __init__(self, func: str) -> None:
        super().__init__(
            f"func {func!r} may not be scheduled over the API: register it with "
            "@scheduler.api_function, or allow it in SCHEDULER_API_ALLOWED_FUNCS"
        )
        self.func = func


class HistoryUnavailableError(QuartSchedError):
    """The run history is off, or its file cannot be opened or read (locked, corrupted)."""


class JobStoreUnavailableError(QuartSchedError):
    """A job store could not be reached (a locked file, a database that is down)."""


class JobNotLoadableError(QuartSchedError):
    """A stored job's function or arguments cannot be loaded (its code is gone or broken).

    The job is kept in its store; it can be removed, and it runs again once its code
    loads. Until then it cannot be run, paused, resumed or modified.
    """

    def __init__(self, job_id: str, load_error: str) -> None:
        super().__init__(
            f"Job {job_id!r} cannot be loaded ({load_error}): deploy the code it needs, "
            "or remove the job"
        )
        self.job_id = job_id
        self.load_error = load_error


class SchedulerAPIError(QuartSchedError):
    """What a REST API route answers when it refuses a request: ``status`` (400, 403, 404,
    409, 500, 503), ``message`` (the ``error_message``) and, for a 400, the ``field`` at
    fault. ``__cause__`` is the error behind it (a :class:`ValidationError`,
    :class:`JobLookupError`, ...).

    The extension answers it with ``{"error_message": ...}`` JSON. To answer otherwise,
    register your own handler on the app, after ``init_app``::

        @app.errorhandler(SchedulerAPIError)
        async def scheduler_api_error(error):
            return {"error": {"code": error.status, "detail": error.message}}, error.status

    It is not an ``HTTPException``: an app's ``@app.errorhandler(404)`` page for humans
    never replaces the API's JSON.
    """

    def __init__(self, status: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        """The JSON body: ``error_message``, and ``field`` when one is at fault."""
        body = {"error_message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body
