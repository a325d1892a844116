"""Pure converters between Flask-APScheduler-style job definitions and APScheduler's arguments.

Nothing here touches a scheduler or an app, so everything is tested without one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from functools import cache
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

TRIGGER_CLASSES: dict[str, type] = {
    "date": DateTrigger,
    "interval": IntervalTrigger,
    "cron": CronTrigger,
}

DATE_FIELDS = ("start_date", "end_date", "run_date")


@cache
def trigger_arg_names(trigger: str) -> tuple[str, ...]:
    """The keyword arguments the named trigger's constructor takes, read off the class."""
    try:
        cls = TRIGGER_CLASSES[trigger]
    except KeyError:
        known = ", ".join(sorted(TRIGGER_CLASSES))
        raise ValueError(f"unknown trigger {trigger!r}; use one of: {known}") from None
    params = inspect.signature(cls).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def parse_datetime(value: str, field: str) -> datetime:
    """Parse an ISO 8601 date or datetime; ``Z`` and offsets are kept, naive stays naive."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{field}: {value!r} is not an ISO 8601 date or datetime "
            "(e.g. '2026-01-31T09:30:00+01:00')"
        ) from None


def fix_job_def(job_def: MutableMapping[str, Any]) -> None:
    """Normalise a job definition in place, as Flask-APScheduler does.

    ISO strings in ``start_date``, ``end_date`` and ``run_date`` become datetimes, and the
    legacy ``{"trigger": {"type": "cron", "minute": 5}}`` form is flattened.
    """
    trigger = job_def.get("trigger")
    if isinstance(trigger, Mapping):
        spec = dict(trigger)
        job_def["trigger"] = spec.pop("type", "date")
        job_def.update(spec)
    for field in DATE_FIELDS:
        value = job_def.get(field)
        if isinstance(value, str):
            job_def[field] = parse_datetime(value, field)


def pop_trigger(job_def: MutableMapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Take the trigger name and its arguments out of ``job_def``."""
    name = job_def.pop("trigger")
    names = trigger_arg_names(name)
    args = {key: job_def.pop(key) for key in names if key in job_def}
    return name, args
