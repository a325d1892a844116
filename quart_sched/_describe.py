"""Triggers in words: "every 3 seconds", "at minute 0 of every hour, Asia/Shanghai".

Pure functions of APScheduler trigger objects, shared by the REST API (the job JSON's
``trigger_description``), the dashboard and the CLI. A shape they do not recognise still
gets a faithful, if plainer, description ("second 0, minute 5-10, hour */3"), never an
error: a trigger that runs must always be describable.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ._memo import ByObject

_UNITS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def describe_trigger(trigger: Any) -> str:
    """One line a person reads at a glance, with the zone when the zone changes when."""
    return _described(trigger)


def _describe(trigger: Any) -> str:
    if isinstance(trigger, IntervalTrigger):
        text = describe_interval(trigger.interval)
        return _with_end(text, trigger.end_date)
    if isinstance(trigger, CronTrigger):
        fields = {field.name: str(field) for field in trigger.fields}
        text = f"{describe_cron(fields)}, {zone_name(trigger.timezone)}"
        return _with_end(text, trigger.end_date)
    if isinstance(trigger, DateTrigger):
        return f"once, at {_when(trigger.run_date)}"
    return str(trigger)  # OrTrigger, AndTrigger, custom triggers: APScheduler's own words


def describe_interval(interval: timedelta) -> str:
    """``every 3 seconds``, ``every hour``, ``every 1 hour and 30 minutes``."""
    total = interval.total_seconds()
    parts: list[tuple[float, str]] = []
    for unit, seconds in _UNITS:
        count = total // seconds if unit != "second" else total
        if count:
            parts.append((count, unit))
            total -= count * seconds
    if not parts:
        return "every 0 seconds"
    if len(parts) == 1 and parts[0][0] == 1:
        return f"every {parts[0][1]}"
    words = [_count(count, unit) for count, unit in parts]
    return "every " + (
        words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    )


def describe_cron(fields: dict[str, str]) -> str:
    """A cron trigger's fields (APScheduler's names, as strings) in words, without zone."""
    second, minute, hour = fields["second"], fields["minute"], fields["hour"]
    clock = _clock(hour, minute, second)
    if clock is not None:
        text = clock
        daily = True
    else:
        text = f"{_within_hour(minute, second)}{_hours(hour, minute, second)}"
        daily = False
    days = _days(fields)
    if days:
        return f"{text} {days}"
    return f"{text} every day" if daily else text


def zone_name(zone: tzinfo | None) -> str:
    """``Asia/Shanghai`` for zoneinfo and pytz zones, else what the zone calls itself."""
    if zone is None:
        return "local time"
    name = getattr(zone, "key", None) or getattr(zone, "zone", None)
    return str(name) if name else str(zone)


# --------------------------------------------------------------------------- helpers


def _count(count: float, unit: str) -> str:
    number = f"{count:g}" if count != int(count) else str(int(count))
    return f"{number} {unit}" + ("" if count == 1 else "s")


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone_name(moment.tzinfo)}"


def _with_end(text: str, end: datetime | None) -> str:
    return text if end is None else f"{text}, until {_when(end)}"


def _step(value: str) -> int | None:
    """``*/5`` -> 5; anything else -> None."""
    if value.startswith("*/") and value[2:].isdigit():
        return int(value[2:])
    return None


def _clock(hour: str, minute: str, second: str) -> str | None:
    """``at 03:00``, ``at 09:00 and 17:30``: fixed times of day, else None."""
    hours = hour.split(",")
    if not (all(h.isdigit() for h in hours) and minute.isdigit() and second.isdigit()):
        return None
    suffix = f":{int(second):02}" if second != "0" else ""
    return "at " + _and([f"{int(h):02}:{int(minute):02}{suffix}" for h in hours])


def _within_hour(minute: str, second: str) -> str:
    if minute.isdigit() and second.isdigit():
        return f"at minute {minute}" + (f", second {second}" if second != "0" else "")
    if minute == "*" and second == "0":
        return "every minute"
    if _step(minute) and second == "0":
        return f"every {_step(minute)} minutes"
    if minute == "*" and second == "*":
        return "every second"
    if minute == "*" and _step(second):
        return f"every {_step(second)} seconds"
    if minute == "*" and second.isdigit():
        return f"at second {second} of every minute"
    if second == "0":
        return f"at minute {minute}"
    return f"at minute {minute}, second {second}"


def _hours(hour: str, minute: str, second: str) -> str:
    at_minute = minute.isdigit() or (minute != "*" and not _step(minute) and second == "0")
    if hour == "*":
        return " of every hour" if at_minute else ""
    if _step(hour):
        return f" of every {_step(hour)} hours" if at_minute else f", every {_step(hour)} hours"
    return f" of hour {hour}" if at_minute else f" in hour {hour}"


def _days(fields: dict[str, str]) -> str:
    words = []
    if fields["day_of_week"] != "*":
        words.append(f"on {fields['day_of_week']}")
    day = fields["day"]
    if day == "last":
        words.append("on the last day of the month")
    elif day != "*":
        words.append(f"on day {day} of the month")
    if fields["week"] != "*":
        words.append(f"in ISO week {fields['week']}")
    if fields["month"] != "*":
        words.append(f"in month {fields['month']}")
    if fields["year"] != "*":
        words.append(f"in {fields['year']}")
    return " ".join(words)


_described = ByObject(_describe)
