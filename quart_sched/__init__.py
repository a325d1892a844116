"""quart_sched: APScheduler for Quart, on the loop that serves the app.

A drop-in for Flask-APScheduler: change ``flask_apscheduler`` to ``quart_sched``.
"""

from __future__ import annotations

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED

from ._current import current_run
from ._extension import APScheduler
from ._history import RunHistory, RunPage
from ._scheduler import QuartExecutor, QuartScheduler
from .errors import (
    ConfigurationError,
    ConflictingIdError,
    HistoryUnavailableError,
    JobLookupError,
    JobNotLoadableError,
    JobNotStorableError,
    QuartSchedError,
    SchedulerAlreadyRunningError,
    SchedulerAPIError,
    SchedulerNotRunningError,
)

__all__ = [
    "STATE_PAUSED",
    "STATE_RUNNING",
    "STATE_STOPPED",
    "APScheduler",
    "ConfigurationError",
    "ConflictingIdError",
    "HistoryUnavailableError",
    "JobLookupError",
    "JobNotLoadableError",
    "JobNotStorableError",
    "QuartExecutor",
    "QuartSchedError",
    "QuartScheduler",
    "RunHistory",
    "RunPage",
    "SchedulerAPIError",
    "SchedulerAlreadyRunningError",
    "SchedulerNotRunningError",
    "current_run",
]
