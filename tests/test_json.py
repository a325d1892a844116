"""Jobs to JSON and request bodies to job arguments, without an app."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask_apscheduler.utils import trigger_to_dict as flask_trigger_to_dict

from quart_sched._json import (
    check_func_ref,
    dumps,
    job_to_dict,
    parse_job_body,
    trigger_to_dict,
)
from quart_sched.errors import ValidationError

UTC = timezone.utc


def target(*args: object, **kwargs: object) -> None:
    pass


START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "trigger",
    [
        DateTrigger(run_date=START),
        IntervalTrigger(minutes=90, start_date=START),
        IntervalTrigger(
            weeks=1, days=2, seconds=5, start_date=START, end_date=START + timedelta(days=30)
        ),
        CronTrigger(minute="*/5", hour="9-17", day_of_week="mon-fri", timezone=UTC),
        CronTrigger(hour=3, start_date=START, end_date=START + timedelta(days=1), timezone=UTC),
    ],
)
def test_trigger_fields_match_flask_apscheduler(trigger: object) -> None:
    ours = trigger_to_dict(trigger)
    theirs = flask_trigger_to_dict(trigger)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        expected = value.isoformat() if isinstance(value, datetime) else value
        assert ours[key] == expected, key


def test_ninety_minutes_is_one_hour_thirty() -> None:
    assert trigger_to_dict(IntervalTrigger(minutes=90, start_date=START)) == {
        "trigger": "interval",
        "start_date": "2030-01-01T00:00:00+00:00",
        "hours": 1,
        "minutes": 30,
    }


def test_job_to_dict_key_order_and_paused_job() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    job = scheduler.add_job(
        target, "interval", hours=2, id="j", name="J", args=[1], kwargs={"a": 2}
    )
    job._modify(next_run_time=None, misfire_grace_time=5, max_instances=2)
    data = job_to_dict(job)
    assert list(data)[:6] == ["id", "name", "func", "args", "kwargs", "trigger"]
    assert list(data)[-3:] == ["misfire_grace_time", "max_instances", "next_run_time"]
    assert data["func"] == "test_json:target"
    assert data["next_run_time"] is None
    assert data["hours"] == 2


def test_dumps_handles_what_json_cannot() -> None:
    assert dumps({"when": START, "d": timedelta(seconds=3), "t": (1, 2)}) == (
        '{"when": "2030-01-01T00:00:00+00:00", "d": 3.0, "t": [1, 2]}'
    )


def test_parse_full_body() -> None:
    spec = parse_job_body(
        {
            "id": "report",
            "func": "app.jobs:report",
            "trigger": "cron",
            "hour": 6,
            "minute": "30",
            "timezone": "Europe/Paris",
            "start_date": "2030-01-01T00:00:00",
            "args": [1],
            "kwargs": {"to": "ops"},
            "max_instances": 2,
            "coalesce": False,
            "misfire_grace_time": None,
        },
        tz=UTC,
    )
    assert spec["timezone"] == ZoneInfo("Europe/Paris")
    assert spec["start_date"] == datetime(2030, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert spec["hour"] == 6 and spec["minute"] == "30"
    assert spec["misfire_grace_time"] is None


def test_naive_dates_take_the_scheduler_zone() -> None:
    spec = parse_job_body(
        {"id": "x", "func": "m:f", "trigger": "date", "run_date": "2030-05-01T12:00:00"},
        tz=ZoneInfo("Asia/Shanghai"),
    )
    assert spec["run_date"].utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"func": "m:f"}, "id"),
        ({"id": "x"}, "func"),
        ({"id": 1, "func": "m:f"}, "id"),
        ({"id": "a/b", "func": "m:f"}, "id"),
        ({"id": "x", "func": "os.system"}, "func"),
        ({"id": "x", "func": "m:f", "trigger": "weekly"}, "trigger"),
        ({"id": "x", "func": "m:f", "trigger": "interval"}, "trigger"),
        ({"id": "x", "func": "m:f", "trigger": "interval", "seconds": -1}, "seconds"),
        ({"id": "x", "func": "m:f", "trigger": "interval", "minutes": "5"}, "minutes"),
        ({"id": "x", "func": "m:f", "trigger": "cron", "minute": 61}, "minute"),
        ({"id": "x", "func": "m:f", "trigger": "cron", "hour": True}, "hour"),
        ({"id": "x", "func": "m:f", "trigger": "date", "run_date": "tomorrow"}, "run_date"),
        ({"id": "x", "func": "m:f", "trigger": "cron", "timezone": "Mars/Base"}, "timezone"),
        ({"id": "x", "func": "m:f", "args": {"a": 1}}, "args"),
        ({"id": "x", "func": "m:f", "kwargs": [1]}, "kwargs"),
        ({"id": "x", "func": "m:f", "max_instances": 0}, "max_instances"),
        ({"id": "x", "func": "m:f", "jobstore": "other"}, "jobstore"),
        ({"id": "x", "func": "m:f", "color": "red"}, "color"),
        ({"id": "x", "func": "m:f", "seconds": 5}, "seconds"),
        (
            {
                "id": "x",
                "func": "m:f",
                "trigger": "interval",
                "seconds": 5,
                "start_date": "2030-02-01",
                "end_date": "2030-01-01",
            },
            "end_date",
        ),
    ],
)
def test_bad_bodies_name_the_field(body: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_job_body(body, tz=UTC)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_patch_body_may_be_partial_but_not_rename() -> None:
    assert parse_job_body({"name": "new"}, tz=UTC, partial=True, url_id="x") == {"name": "new"}
    with pytest.raises(ValidationError, match="differs from the URL"):
        parse_job_body({"id": "y"}, tz=UTC, partial=True, url_id="x")


def test_legacy_trigger_dict() -> None:
    spec = parse_job_body(
        {"id": "x", "func": "m:f", "trigger": {"type": "interval", "seconds": 5}}, tz=UTC
    )
    assert spec["trigger"] == "interval" and spec["seconds"] == 5


@pytest.mark.parametrize("ref", ["os:system\n", "os:system\r\n", "os:system ", "\nos:system"])
def test_func_reference_must_match_in_full(ref: str) -> None:
    """``$`` matches before a trailing newline: the reference check must be a full match."""
    with pytest.raises(ValidationError) as caught:
        check_func_ref(ref)
    assert caught.value.field == "func"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "report\n2026-01-01 INFO forged line"),
        ("name", "\x1b[31mred\x1b[0m"),
        ("name", "next\x85line"),  # C1 NEL
        ("name", "line\u2028separator"),
        ("func", "app.jobs:report\n"),
        ("hour", "3\n"),
        ("start_date", "2030-01-01T00:00:00\n"),
        ("timezone", "UTC\r"),
    ],
)
def test_control_characters_in_logged_fields_are_refused(field: str, value: str) -> None:
    body = {"id": "j", "func": "app.jobs:report", "trigger": "cron", "minute": 5, field: value}
    with pytest.raises(ValidationError) as caught:
        parse_job_body(body, tz=timezone.utc)
    assert caught.value.field == field


def test_control_characters_in_job_arguments_are_kept() -> None:
    """Arguments are never logged: a message body may hold newlines."""
    body = {"id": "j", "func": "app.jobs:report", "args": ["a\nb"], "kwargs": {"k": "\x1b"}}
    parsed = parse_job_body(body, tz=timezone.utc)
    assert (parsed["args"], parsed["kwargs"]) == (["a\nb"], {"k": "\x1b"})
