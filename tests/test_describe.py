"""Triggers in words (``quart_sched._describe``): pure functions, no app."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from quart_sched._describe import describe_interval, describe_trigger

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("interval", "words"),
    [
        (timedelta(seconds=3), "every 3 seconds"),
        (timedelta(seconds=1), "every second"),
        (timedelta(hours=1), "every hour"),
        (timedelta(minutes=90), "every 1 hour and 30 minutes"),
        (timedelta(seconds=1.5), "every 1.5 seconds"),
        (timedelta(weeks=1, days=2, seconds=3), "every 1 week, 2 days and 3 seconds"),
    ],
)
def test_intervals_read_as_spoken(interval: timedelta, words: str) -> None:
    assert describe_interval(interval) == words


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"minute": 0}, "at minute 0 of every hour, Asia/Shanghai"),
        ({"hour": 3}, "at 03:00 every day, Asia/Shanghai"),
        ({"hour": "9,17", "minute": 30}, "at 09:30 and 17:30 every day, Asia/Shanghai"),
        ({"hour": 6, "minute": 30, "second": 15}, "at 06:30:15 every day, Asia/Shanghai"),
        ({"minute": "*/5"}, "every 5 minutes, Asia/Shanghai"),
        ({"second": "*/10"}, "every 10 seconds, Asia/Shanghai"),
        ({"second": 30}, "at second 30 of every minute, Asia/Shanghai"),
        ({"minute": "*/15", "hour": "9-17"}, "every 15 minutes in hour 9-17, Asia/Shanghai"),
        ({"hour": "*/2"}, "at minute 0 of every 2 hours, Asia/Shanghai"),
        ({"day_of_week": "mon-fri", "hour": 8}, "at 08:00 on mon-fri, Asia/Shanghai"),
        ({"day": "last", "hour": 0}, "at 00:00 on the last day of the month, Asia/Shanghai"),
        ({"month": "jan", "day": 1}, "at 00:00 on day 1 of the month in month jan, Asia/Shanghai"),
        ({"minute": "0,30"}, "at minute 0,30 of every hour, Asia/Shanghai"),
        ({}, "every second, Asia/Shanghai"),
    ],
)
def test_cron_triggers_read_as_spoken_with_their_zone(fields: dict[str, Any], words: str) -> None:
    assert describe_trigger(CronTrigger(**fields, timezone=SHANGHAI)) == words


def test_date_triggers_say_once_and_when() -> None:
    trigger = DateTrigger(datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI))
    assert describe_trigger(trigger) == "once, at 2026-12-01 09:00:00 Asia/Shanghai"


def test_an_end_date_is_said() -> None:
    end = datetime(2027, 1, 1, tzinfo=SHANGHAI)
    trigger = IntervalTrigger(seconds=3, end_date=end, timezone=SHANGHAI)
    assert describe_trigger(trigger) == "every 3 seconds, until 2027-01-01 00:00:00 Asia/Shanghai"


def test_other_triggers_fall_back_to_apschedulers_words() -> None:
    from apscheduler.triggers.combining import OrTrigger

    trigger = OrTrigger([IntervalTrigger(seconds=5), CronTrigger(hour=1, timezone=SHANGHAI)])
    assert describe_trigger(trigger) == str(trigger)
