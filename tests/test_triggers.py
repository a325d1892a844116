"""quart_sched.triggers.CronTrigger: what runs when on DST nights, and that every cron job
gets it (config, @task, add_job, modify_job, the REST API, a persistent store)."""

from __future__ import annotations

import pickle
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger as APSchedulerCronTrigger
from quart import Quart

from quart_sched import APScheduler
from quart_sched.triggers import CronTrigger

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SYDNEY = ZoneInfo("Australia/Sydney")
NOOP = f"{__name__}:noop"  # how stores and the API refer to it


def noop() -> None:
    pass


def fires(trigger: Any, start: datetime, end: datetime) -> list[datetime]:
    out: list[datetime] = []
    previous = None
    while True:
        fire = trigger.get_next_fire_time(previous, previous or start)
        if fire is None or fire > end:
            return out
        assert not out or fire.astimezone(UTC) > out[-1].astimezone(UTC)
        out.append(fire)
        previous = fire


def double_runs(trigger: Any, tz: ZoneInfo, years: range) -> int:
    """Local dates on which a once-a-day job ran more than once."""
    start = datetime(years.start, 1, 1, tzinfo=tz)
    end = datetime(years.stop, 1, 1, tzinfo=tz)
    per_date = Counter(f.astimezone(tz).date() for f in fires(trigger, start, end))
    return sum(1 for count in per_date.values() if count > 1)


TEN_YEARS = range(2027, 2037)
DAILY_CASES = [
    (NEW_YORK, 1, 30),
    (BERLIN, 2, 30),
    (SYDNEY, 2, 30),
]


@pytest.mark.parametrize(("tz", "hour", "minute"), DAILY_CASES)
def test_daily_job_in_the_repeated_hour_runs_once_a_day_for_ten_years(
    tz: ZoneInfo, hour: int, minute: int
) -> None:
    theirs = APSchedulerCronTrigger(hour=hour, minute=minute, timezone=tz)
    ours = CronTrigger(hour=hour, minute=minute, timezone=tz)
    # What the issue measured: one double run per fall-back night, ten in ten years.
    assert double_runs(theirs, tz, TEN_YEARS) == 10
    assert double_runs(ours, tz, TEN_YEARS) == 0
    start, end = datetime(2027, 1, 1, tzinfo=tz), datetime(2037, 1, 1, tzinfo=tz)
    dates = {f.astimezone(tz).date() for f in fires(ours, start, end)}
    assert len(fires(ours, start, end)) == len(dates) == (date(2037, 1, 1) - date(2027, 1, 1)).days


def test_new_york_fall_back_night() -> None:
    start = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    end = datetime(2026, 11, 1, 12, tzinfo=NEW_YORK)
    daily = CronTrigger(hour=1, minute=30, timezone=NEW_YORK)
    assert [f.isoformat() for f in fires(daily, start, end)] == ["2026-11-01T01:30:00-04:00"]
    theirs = APSchedulerCronTrigger(hour=1, minute=30, timezone=NEW_YORK)
    assert [f.isoformat() for f in fires(theirs, start, end)] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ]
    # hour '*' is a wildcard: the hourly job runs in both 01:00 hours.
    hourly = CronTrigger(minute=0, timezone=NEW_YORK)
    night = [f.isoformat() for f in fires(hourly, start, end) if f.date() == date(2026, 11, 1)]
    assert night[:4] == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    quarter = CronTrigger(minute="*/15", hour=1, timezone=NEW_YORK)
    assert len(fires(quarter, start, end)) == 8  # 01:00..01:45, twice


def test_spring_forward_runs_a_skipped_time_once_when_the_clock_resumes() -> None:
    start = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK)
    end = datetime(2026, 3, 9, 12, tzinfo=NEW_YORK)
    daily = CronTrigger(hour=2, minute=30, timezone=NEW_YORK)
    assert [f.isoformat() for f in fires(daily, start, end)] == [
        "2026-03-08T03:00:00-04:00",  # APScheduler: 03:30
        "2026-03-09T02:30:00-04:00",
    ]
    twice = CronTrigger(hour="2-3", minute="0,30", timezone=NEW_YORK)
    on_the_day = [f.isoformat() for f in fires(twice, start, end) if f.day == 8]
    assert on_the_day == ["2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]
    # A wildcard job skips what never happened.
    quarter = CronTrigger(minute="*/30", timezone=NEW_YORK)
    times = [f.strftime("%H:%M") for f in fires(quarter, start, end) if f.day == 8]
    assert times[2:6] == ["01:00", "01:30", "03:00", "03:30"]
    for tz, day in ((BERLIN, date(2026, 3, 29)), (SYDNEY, date(2026, 10, 4))):
        trigger = CronTrigger(hour=2, minute=30, timezone=tz)
        after = datetime.combine(day, datetime.min.time(), tz)
        assert trigger.get_next_fire_time(None, after).strftime("%H:%M %z") in (
            "03:00 +0200",
            "03:00 +1100",
        )


def test_a_whole_skipped_date_runs_once_on_the_next() -> None:
    # Samoa skipped 2011-12-30 (from -10 to +14).
    apia = ZoneInfo("Pacific/Apia")
    trigger = CronTrigger(hour=10, timezone=apia)
    start = datetime(2011, 12, 29, 12, tzinfo=apia)
    end = datetime(2012, 1, 1, 12, tzinfo=apia)
    assert [f.isoformat() for f in fires(trigger, start, end)] == [
        "2011-12-31T00:00:00+14:00",  # the 30th's 10:00, when the clock resumed
        "2011-12-31T10:00:00+14:00",
        "2012-01-01T10:00:00+14:00",
    ]


def test_wildcard_is_vixie_crons_rule() -> None:
    wildcard = [{}, {"minute": 30}, {"minute": "*/15", "hour": 1}, {"second": "*/10"}]
    wildcard += [{"hour": "*/2", "minute": 0}, {"hour": 1, "minute": 30, "second": "*"}]
    fixed = [{"hour": 1, "minute": 30}, {"hour": "1-3"}, {"hour": 2, "minute": "0,30"}]
    fixed += [{"day": 1}, {"day_of_week": "mon"}, {"hour": "0-23/2", "minute": 0}]
    assert all(CronTrigger(timezone=UTC, **args).wildcard for args in wildcard)
    assert not any(CronTrigger(timezone=UTC, **args).wildcard for args in fixed)


def test_start_end_dates_and_jitter() -> None:
    trigger = CronTrigger(
        hour=1,
        minute=30,
        start_date=datetime(2026, 11, 1, tzinfo=NEW_YORK),
        end_date=datetime(2026, 11, 3, tzinfo=NEW_YORK),
        timezone=NEW_YORK,
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    got = fires(trigger, now, datetime(2027, 1, 1, tzinfo=UTC))
    assert [f.isoformat() for f in got] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    jittery = CronTrigger(hour=1, minute=30, jitter=60, timezone=NEW_YORK)
    first = jittery.get_next_fire_time(None, datetime(2026, 11, 1, tzinfo=NEW_YORK))
    start = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert start <= first.astimezone(UTC) <= start + timedelta(seconds=60)
    assert (
        CronTrigger(year=9999, month=12, day=31, hour=23, timezone=NEW_YORK).get_next_fire_time(
            None, datetime(9999, 12, 31, 23, 30, tzinfo=UTC)
        )
        is None
    )


# ------------------------------------------------------------------------- pickling


def _job(trigger: Any) -> Job:
    scheduler = AsyncIOScheduler(timezone=NEW_YORK)
    job = Job(
        scheduler,
        id="nightly",
        func=NOOP,
        args=(),
        kwargs={},
        trigger=trigger,
        executor="default",
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
        name="nightly",
        next_run_time=None,
    )
    return job


def _reload(job: Job) -> Job:
    state = pickle.loads(pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL))
    loaded: Job = Job.__new__(Job)
    loaded.__setstate__(state)
    return loaded


def test_pickled_job_round_trips_by_its_public_path() -> None:
    trigger = CronTrigger(hour=1, minute=30, timezone=NEW_YORK)
    data = pickle.dumps(_job(trigger).__getstate__())
    assert b"quart_sched.triggers" in data and b"CronTrigger" in data
    loaded = _reload(_job(trigger))
    assert type(loaded.trigger) is CronTrigger
    after = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    end = after + timedelta(days=2)
    assert fires(loaded.trigger, after, end) == fires(trigger, after, end)
    # The state is APScheduler's own (version 2): either class reads the other's.
    theirs = APSchedulerCronTrigger(hour=1, minute=30, timezone=NEW_YORK)
    assert trigger.__getstate__() == theirs.__getstate__()


def test_job_pickled_with_apschedulers_trigger_still_loads() -> None:
    theirs = APSchedulerCronTrigger(hour=1, minute=30, timezone=NEW_YORK)
    loaded = _reload(_job(theirs))
    assert type(loaded.trigger) is APSchedulerCronTrigger
    converted = CronTrigger.from_trigger(loaded.trigger)
    assert str(converted) == str(theirs) and converted.timezone == NEW_YORK
    after = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    assert len(fires(converted, after, after + timedelta(days=1))) == 1
    with pytest.raises(TypeError):
        CronTrigger.from_trigger("cron")  # type: ignore[arg-type]


# ------------------------------------------------------------ through the scheduler


def test_every_way_of_making_a_cron_job_gets_it(app: Quart) -> None:
    app.config.update(
        SCHEDULER_TIMEZONE="America/New_York",
        SCHEDULER_JOBS=[{"id": "config", "func": NOOP, "trigger": "cron", "hour": 1}],
    )
    ext = APScheduler()

    @ext.task("cron", id="decorated", hour=1, minute=30)
    def decorated() -> None:
        pass

    ext.init_app(app)
    ext.add_job("added", noop, trigger="cron", hour=2)
    ext.add_job("legacy", noop, trigger={"type": "cron", "minute": "*/5"})
    ext.add_job("interval", noop, trigger="interval", hours=1)
    ext.modify_job("interval", trigger="cron", hour=3)
    explicit = APSchedulerCronTrigger(hour=4, timezone=UTC)
    ext.add_job("explicit", noop, trigger=explicit)
    jobs = {job.id: job for job in ext.get_jobs()}
    for job_id in ("config", "decorated", "added", "legacy", "interval"):
        assert type(jobs[job_id].trigger) is CronTrigger, job_id
        assert jobs[job_id].trigger.timezone == NEW_YORK
    assert jobs["explicit"].trigger is explicit  # an instance given is kept


async def test_api_job_gets_it_and_previews_the_fall_back_night(app: Quart) -> None:
    app.config.update(
        SCHEDULER_API_ENABLED=True,
        SCHEDULER_TIMEZONE="America/New_York",
        SCHEDULER_API_ALLOWED_FUNCS=[f"{__name__}:*"],
    )
    ext = APScheduler(app=app)
    ext.start()
    try:
        async with app.test_app():
            client = app.test_client()
            body = {"id": "backup", "func": NOOP, "trigger": "cron", "hour": 1, "minute": 30}
            response = await client.post("/scheduler/jobs", json=body)
            assert response.status_code == 200
            shown = await response.get_json()
            assert (shown["trigger"], shown["hour"], shown["minute"]) == ("cron", "1", "30")
            assert type(ext.get_job("backup").trigger) is CronTrigger

            url = "/scheduler/jobs/backup/next_run_times"
            response = await client.get(url, query_string={"n": 3, "after": "2026-10-31T12:00:00"})
            assert response.status_code == 200
            assert (await response.get_json())["next_run_times"] == [
                "2026-11-01T01:30:00-04:00",  # once: not again at 01:30 EST
                "2026-11-02T01:30:00-05:00",
                "2026-11-03T01:30:00-05:00",
            ]
            # An offset or Z is honoured; after is exclusive.
            response = await client.get(
                url, query_string={"n": 1, "after": "2026-11-01T05:30:00Z"}
            )
            assert (await response.get_json())["next_run_times"] == ["2026-11-02T01:30:00-05:00"]

            hourly = {"id": "hourly", "func": NOOP, "trigger": "cron", "minute": 0}
            assert (await client.post("/scheduler/jobs", json=hourly)).status_code == 200
            response = await client.get(
                "/scheduler/jobs/hourly/next_run_times",
                query_string={"n": 3, "after": "2026-11-01T00:30:00-04:00"},
            )
            assert (await response.get_json())["next_run_times"] == [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00",
            ]

            for bad in ("tomorrow", "2026-13-01", "2026-11-01T00:00:00+25:00", ""):
                response = await client.get(url, query_string={"after": bad})
                assert response.status_code == 400, bad
                assert "after" in (await response.get_json())["error_message"]
    finally:
        if ext.running:
            ext.shutdown(wait=False)


async def test_stored_job_comes_back_with_it(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    for round_ in range(2):
        app = Quart(f"triggers_store_{round_}")
        app.config.update(
            SCHEDULER_SHUTDOWN_TIMEOUT=2,
            SCHEDULER_TIMEZONE="America/New_York",
            SCHEDULER_JOBSTORES={"default": SQLAlchemyJobStore(url=f"sqlite:///{db}")},
        )
        ext = APScheduler(app=app)
        async with app.test_app():
            ext.start()
            if round_ == 0:
                ext.add_job("nightly", noop, trigger="cron", hour=1, minute=30)
            job = ext.get_job("nightly")
            assert job is not None and type(job.trigger) is CronTrigger
            after = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
            times = ext.next_run_times(job, 2, after=after)
            assert [t.isoformat() for t in times] == [
                "2026-11-01T01:30:00-04:00",
                "2026-11-02T01:30:00-05:00",
            ]
