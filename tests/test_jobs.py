"""The pure converters between Flask-APScheduler job definitions and APScheduler arguments."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from quart_sched._jobs import fix_job_def, parse_datetime, pop_trigger, trigger_arg_names


def test_trigger_arg_names_come_from_the_trigger_classes() -> None:
    assert set(trigger_arg_names("date")) == {"run_date", "timezone"}
    assert {"weeks", "days", "hours", "minutes", "seconds", "jitter"} <= set(
        trigger_arg_names("interval")
    )
    assert {"year", "month", "day", "week", "day_of_week", "hour", "minute", "second"} <= set(
        trigger_arg_names("cron")
    )


def test_unknown_trigger_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown trigger 'weekly'; use one of: cron, date"):
        trigger_arg_names("weekly")


def test_pop_trigger_takes_only_trigger_arguments() -> None:
    job = {"trigger": "cron", "minute": "5", "hour": 1, "args": [1], "id": "x"}
    assert pop_trigger(job) == ("cron", {"minute": "5", "hour": 1})
    assert job == {"args": [1], "id": "x"}


def test_fix_job_def_parses_dates_and_flattens_legacy_trigger() -> None:
    job = {"trigger": {"type": "interval", "minutes": 90}, "start_date": "2030-01-01T00:00:00Z"}
    fix_job_def(job)
    assert job == {
        "trigger": "interval",
        "minutes": 90,
        "start_date": datetime(2030, 1, 1, tzinfo=timezone.utc),
    }


def test_legacy_trigger_dict_without_type_is_a_date_trigger() -> None:
    job = {"trigger": {"run_date": "2030-01-01 10:00:00"}}
    fix_job_def(job)
    assert job == {"trigger": "date", "run_date": datetime(2030, 1, 1, 10)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01", datetime(2030, 1, 1)),
        (
            "2030-01-01T10:30:00+01:00",
            datetime(2030, 1, 1, 10, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2030-01-01T10:30:00Z", datetime(2030, 1, 1, 10, 30, tzinfo=timezone.utc)),
    ],
)
def test_parse_datetime(text: str, expected: datetime) -> None:
    assert parse_datetime(text, "run_date") == expected


def test_parse_datetime_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"end_date: 'next week' is not an ISO 8601"):
        parse_datetime("next week", "end_date")
