"""The exceptions quart_sched raises, and APScheduler's that users catch alongside them."""

from __future__ import annotations

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.schedulers import SchedulerAlreadyRunningError, SchedulerNotRunningError

__all__ = [
    "ConfigurationError",
    "ConflictingIdError",
    "JobLookupError",
    "JobNotStorableError",
    "QuartSchedError",
    "SchedulerAlreadyRunningError",
    "SchedulerNotRunningError",
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
