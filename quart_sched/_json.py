"""Pure conversions for the REST API: jobs to JSON, and request bodies to job arguments.

Nothing here touches a scheduler, an app or a request, so it is tested without one. Every
rejection is a :class:`ValidationError` naming the field at fault.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ._jobs import TRIGGER_CLASSES, parse_datetime, trigger_arg_names
from ._memo import ByObject
from .errors import ValidationError

#: Top-level job fields a client may send (trigger arguments come on top).
JOB_FIELDS = frozenset(
    {
        "id",
        "name",
        "func",
        "args",
        "kwargs",
        "trigger",
        "misfire_grace_time",
        "max_instances",
        "coalesce",
        "next_run_time",
    }
)
#: Fields add_job takes that must never come from a client.
SERVER_ONLY_FIELDS = frozenset({"jobstore", "executor", "replace_existing"})
CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
MAX_ID_LENGTH = 200
#: Longest interval, grace time or jitter the API takes: 100 years, far below what
#: timedelta and datetime arithmetic overflow on.
MAX_SECONDS = 100 * 366 * 86400
MAX_INSTANCES = 10_000
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: Used with fullmatch: ``$`` alone would accept a trailing newline.
FUNC_REF = re.compile(rf"{_NAME}(\.{_NAME})*:{_NAME}(\.{_NAME})*")
#: Fields whose strings are the job's own data, never logged: they may hold any text.
_ARGUMENT_FIELDS = frozenset({"args", "kwargs"})


# ------------------------------------------------------------------------ job -> JSON


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 / RFC 3339; a pre-1900s local mean time offset (+00:09:21) is given in UTC,
    since RFC 3339 offsets have no seconds."""
    if value is None:
        return None
    offset = value.utcoffset()
    if offset is not None and offset.seconds % 60:
        value = value.astimezone(timezone.utc)
    return value.isoformat()


def _split_interval(delta: timedelta) -> dict[str, int | float]:
    weeks, days = divmod(delta.days, 7)
    minutes, seconds = divmod(delta.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    parts: dict[str, int | float] = {
        "weeks": weeks,
        "days": days,
        "hours": hours,
        "minutes": minutes,
        "seconds": seconds + delta.microseconds / 1e6 if delta.microseconds else seconds,
    }
    return {unit: value for unit, value in parts.items() if value > 0}


def trigger_to_dict(trigger: Any) -> dict[str, Any]:
    """Flask-APScheduler's decomposition: 90 minutes is ``hours: 1, minutes: 30``."""
    return dict(_trigger_fields(trigger))


def _trigger_to_dict(trigger: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if isinstance(trigger, DateTrigger):
        data["trigger"] = "date"
        data["run_date"] = isoformat(trigger.run_date)
    elif isinstance(trigger, IntervalTrigger):
        data["trigger"] = "interval"
        data["start_date"] = isoformat(trigger.start_date)
        if trigger.end_date:
            data["end_date"] = isoformat(trigger.end_date)
        data.update(_split_interval(trigger.interval))
    elif isinstance(trigger, CronTrigger):
        data["trigger"] = "cron"
        if trigger.start_date:
            data["start_date"] = isoformat(trigger.start_date)
        if trigger.end_date:
            data["end_date"] = isoformat(trigger.end_date)
        for field in trigger.fields:
            if not field.is_default:
                data[field.name] = str(field)
    else:
        data["trigger"] = str(trigger)
    return data


_trigger_fields = ByObject(_trigger_to_dict)  # copied for each caller: never changed


def job_to_dict(
    job: Any, defaults: Mapping[str, Any] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """A job as Flask-APScheduler's API shows it, same keys in the same order.

    A job added before the scheduler starts has no defaults or next run time yet: it
    shows the ``defaults`` it will get and the first fire time its trigger gives after
    ``now`` (null only for a paused job).
    """
    defaults = defaults or {}
    data: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "func": job.func_ref,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
    }
    data.update(trigger_to_dict(job.trigger))
    data["misfire_grace_time"] = getattr(
        job, "misfire_grace_time", defaults.get("misfire_grace_time")
    )
    data["max_instances"] = getattr(job, "max_instances", defaults.get("max_instances"))
    if hasattr(job, "next_run_time"):
        data["next_run_time"] = isoformat(job.next_run_time)
    else:
        data["next_run_time"] = isoformat(
            job.trigger.get_next_fire_time(None, now or datetime.now(timezone.utc))
        )
    return data


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def dumps(value: Any) -> str:
    """JSON with ISO 8601 datetimes; arguments JSON cannot hold are shown by ``repr``."""
    return json.dumps(value, default=_default, ensure_ascii=False)


# ------------------------------------------------------------------- body -> job args


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _number(
    field: str, value: Any, *, minimum: float = 0, maximum: float = MAX_SECONDS
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, f"{field} must be a number, got {_type_name(value)}")
    # Compare before any float conversion: 10**400 has none.
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, f"{field} must be a finite number")
    if not minimum <= value <= maximum:
        raise ValidationError(field, f"{field} must be between {minimum} and {maximum:g}")
    return value


def _integer(field: str, value: Any, *, minimum: int, maximum: int = MAX_SECONDS) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"{field} must be an integer, got {_type_name(value)}")
    if not minimum <= value <= maximum:
        raise ValidationError(field, f"{field} must be between {minimum} and {maximum}")
    return value


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string, got {_type_name(value)}")
    return value


def _datetime(field: str, value: Any, tz: Any) -> datetime:
    text = _string(field, value)
    try:
        parsed = parse_datetime(text, field)
    except ValueError as exc:
        raise ValidationError(field, str(exc)) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise ValidationError(field, f"{field}: {text!r} is out of range") from None
    return parsed


def _timezone(value: Any) -> ZoneInfo:
    text = _string("timezone", value)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a tzdata directory
        raise ValidationError(
            "timezone", f"timezone: {text!r} is not an IANA time zone such as 'Europe/Paris'"
        ) from None


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds a C0/C1 control character (newline, ESC of an ANSI sequence)
    or a Unicode line break: written into a log, these forge or hide lines."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def _loggable(field: str, value: Any) -> None:
    if isinstance(value, str) and has_control_chars(value):
        raise ValidationError(
            field, f"{field} must not contain control characters (newlines, escapes)"
        )


def check_func_ref(value: Any) -> str:
    text = _string("func", value)
    if not FUNC_REF.fullmatch(text):
        raise ValidationError(
            "func", f"func: {text!r} is not a 'module:function' reference, e.g. 'app.jobs:report'"
        )
    return text


def check_job_id(value: Any) -> str:
    text = _string("id", value)
    if not text or len(text) > MAX_ID_LENGTH:
        raise ValidationError("id", f"id must be 1 to {MAX_ID_LENGTH} characters long")
    if "/" in text or has_control_chars(text):
        raise ValidationError("id", "id must not contain '/' or control characters")
    return text


def interval_seconds(args: Mapping[str, Any]) -> float:
    """The length of an interval trigger's ``weeks/days/hours/minutes/seconds``, summed as
    the client sent them: APScheduler rounds ``seconds: 1e-300`` to 0 and then to 1 s."""
    return float(sum(args.get(unit, 0) * _UNIT_SECONDS[unit] for unit in INTERVAL_UNITS))


def _trigger_args(trigger: str, body: Mapping[str, Any], tz: Any) -> dict[str, Any]:
    """Type-check and convert the trigger's arguments, naming the field at fault."""
    args: dict[str, Any] = {}
    zone = _timezone(body["timezone"]) if body.get("timezone") is not None else tz
    for name in trigger_arg_names(trigger):
        if name not in body:
            continue
        value = body[name]
        if name == "timezone":
            if value is not None:
                args[name] = zone
        elif name in ("start_date", "end_date", "run_date"):
            if value is not None:
                args[name] = _datetime(name, value, zone)
        elif name == "jitter":
            if value is not None:
                args[name] = _number(name, value)
        elif name in INTERVAL_UNITS:
            args[name] = _number(name, value)
        elif name in CRON_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
                raise ValidationError(
                    name, f"{name} must be an integer or a cron expression string"
                )
            try:
                CronTrigger(**{name: value}, timezone=timezone.utc)
            except (ValueError, TypeError) as exc:
                raise ValidationError(name, f"{name}: {exc}") from None
            args[name] = value
    if trigger == "interval":
        total = interval_seconds(args)
        if total > MAX_SECONDS:
            raise ValidationError(
                "trigger", f"an interval trigger's interval must be at most {MAX_SECONDS} s"
            )
        if total <= 0:
            raise ValidationError(
                "trigger",
                "an interval trigger needs a positive interval: "
                "give weeks, days, hours, minutes or seconds",
            )
    start, end = args.get("start_date"), args.get("end_date")
    if start is not None and end is not None and end < start:
        raise ValidationError("end_date", "end_date must not be before start_date")
    return args


def parse_job_body(
    body: Any, *, tz: Any, partial: bool = False, url_id: str | None = None
) -> dict[str, Any]:
    """Validate a POST (or, with ``partial``, a PATCH) body into ``add_job`` arguments.

    ``tz`` is the scheduler's time zone, for dates sent without an offset. Raises
    :class:`ValidationError` naming the field; never imports anything.
    """
    if not isinstance(body, Mapping):
        raise ValidationError("body", f"the body must be a JSON object, got {_type_name(body)}")
    data = dict(body)
    trigger = data.get("trigger")
    if isinstance(trigger, Mapping):  # Flask-APScheduler's legacy {"trigger": {"type": ...}}
        legacy = dict(trigger)
        trigger = legacy.pop("type", "date")
        clash = set(legacy) & set(data)
        if clash:
            field = sorted(clash)[0]
            raise ValidationError(field, f"{field} is given twice (in trigger and beside it)")
        data.update(legacy)
        data["trigger"] = trigger
    if trigger is not None:
        trigger = _string("trigger", trigger)
        if trigger not in TRIGGER_CLASSES:
            known = ", ".join(sorted(TRIGGER_CLASSES))
            raise ValidationError("trigger", f"unknown trigger {trigger!r}; use one of: {known}")

    allowed = JOB_FIELDS | (set(trigger_arg_names(trigger)) if trigger else set())
    for field, value in data.items():
        if field in SERVER_ONLY_FIELDS:
            raise ValidationError(field, f"{field} cannot be set over the API")
        if field not in allowed:
            owners = [t for t in sorted(TRIGGER_CLASSES) if field in trigger_arg_names(t)]
            if trigger is None and owners:
                example = {"cron": '"hour": 4', "interval": '"seconds": 10'}.get(
                    owners[0], f'"{field}": ...'
                )
                raise ValidationError(
                    field,
                    f"{field} is a trigger argument: send it with its trigger, "
                    f'e.g. {{"trigger": "{owners[0]}", {example}}}',
                )
            raise ValidationError(field, f"unknown field {field!r}")
        if field not in _ARGUMENT_FIELDS:  # the rest may reach a log: names, triggers, dates
            _loggable(field, value)

    out: dict[str, Any] = {}
    if "id" in data:
        out["id"] = check_job_id(data["id"])
        if url_id is not None and out["id"] != url_id:
            raise ValidationError("id", f"id {out['id']!r} differs from the URL's {url_id!r}")
    elif not partial:
        raise ValidationError("id", "id is required")
    if "func" in data:
        out["func"] = check_func_ref(data["func"])
    elif not partial:
        raise ValidationError("func", "func is required, e.g. 'app.jobs:report'")
    if "name" in data:
        out["name"] = _string("name", data["name"])
    if "args" in data:
        if not isinstance(data["args"], list):
            raise ValidationError("args", f"args must be an array, got {_type_name(data['args'])}")
        out["args"] = list(data["args"])
    if "kwargs" in data:
        if not isinstance(data["kwargs"], Mapping):
            raise ValidationError(
                "kwargs", f"kwargs must be an object, got {_type_name(data['kwargs'])}"
            )
        out["kwargs"] = dict(data["kwargs"])
    if "misfire_grace_time" in data:
        value = data["misfire_grace_time"]
        out["misfire_grace_time"] = (
            None if value is None else _integer("misfire_grace_time", value, minimum=1)
        )
    if "max_instances" in data:
        out["max_instances"] = _integer(
            "max_instances", data["max_instances"], minimum=1, maximum=MAX_INSTANCES
        )
    if "coalesce" in data:
        if not isinstance(data["coalesce"], bool):
            raise ValidationError("coalesce", "coalesce must be true or false")
        out["coalesce"] = data["coalesce"]
    if "next_run_time" in data:
        value = data["next_run_time"]
        out["next_run_time"] = None if value is None else _datetime("next_run_time", value, tz)
    if trigger is not None:
        out["trigger"] = trigger
        out.update(_trigger_args(trigger, data, tz))
    return out
