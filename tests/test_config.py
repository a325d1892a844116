"""Every Flask-APScheduler config key and method, with the same names and meanings."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ADDED, EVENT_JOB_EXECUTED, EVENT_JOB_REMOVED
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from quart import Quart

from quart_sched import (
    APScheduler,
    ConfigurationError,
    ConflictingIdError,
    JobLookupError,
    QuartExecutor,
)

from support import wait_until

calls: list[tuple[Any, ...]] = []


def add(a: int, b: int) -> None:
    calls.append((a + b,))


def noop(*args: Any) -> None:
    calls.append(args)


def test_jobs_from_config_as_in_the_flask_apscheduler_tutorial(app: Quart) -> None:
    app.config["JOBS"] = [
        {
            "id": "job1",
            "func": "test_config:add",
            "args": (1, 2),
            "trigger": "interval",
            "seconds": 3,
        }
    ]
    ext = APScheduler(app=app)
    job = ext.get_job("job1")
    assert job is not None
    assert job.name == "job1"
    assert job.func is add
    assert job.args == (1, 2)
    assert job.trigger.interval == timedelta(seconds=3)


def test_scheduler_jobs_wins_over_jobs(app: Quart) -> None:
    app.config["JOBS"] = [{"id": "old", "func": "test_config:noop", "trigger": "date"}]
    app.config["SCHEDULER_JOBS"] = [{"id": "new", "func": "test_config:noop", "trigger": "date"}]
    ext = APScheduler(app=app)
    assert [j.id for j in ext.get_jobs()] == ["new"]


@pytest.mark.parametrize("tz", ["Asia/Shanghai", ZoneInfo("Asia/Shanghai")])
def test_timezone_as_string_or_tzinfo_applies_to_every_job(app: Quart, tz: Any) -> None:
    ext = APScheduler()

    @ext.task("cron", id="early", minute="*")  # declared before init_app
    def early() -> None: ...

    app.config["SCHEDULER_TIMEZONE"] = tz
    app.config["JOBS"] = [{"id": "cfg", "func": "test_config:noop", "trigger": "cron", "hour": 1}]
    ext.init_app(app)
    ext.add_job("late", noop, trigger="interval", seconds=5)
    for job_id in ("early", "cfg", "late"):
        job = ext.get_job(job_id)
        assert job is not None
        assert str(job.trigger.timezone) == "Asia/Shanghai", job_id


def test_decorator_style_from_the_flask_apscheduler_docs(app: Quart) -> None:
    ext = APScheduler()

    @ext.task("interval", id="do_job_1", seconds=30, misfire_grace_time=900)
    def job1() -> None: ...

    @ext.task("cron", id="do_job_2", minute="*")
    async def job2() -> None: ...

    @ext.task("cron", id="do_job_3", week="*", day_of_week="sun")
    def job3() -> None: ...

    ext.init_app(app)
    jobs = {job.id: job for job in ext.get_jobs()}
    assert set(jobs) == {"do_job_1", "do_job_2", "do_job_3"}
    assert isinstance(jobs["do_job_1"].trigger, IntervalTrigger)
    assert jobs["do_job_1"].misfire_grace_time == 900
    assert isinstance(jobs["do_job_3"].trigger, CronTrigger)
    assert job1() is None  # the decorator returns the function itself


def test_job_defaults_apply(app: Quart) -> None:
    app.config["SCHEDULER_JOB_DEFAULTS"] = {"coalesce": False, "max_instances": 3}
    ext = APScheduler(app=app)
    ext.start  # noqa: B018
    assert ext.scheduler._job_defaults["coalesce"] is False
    assert ext.scheduler._job_defaults["max_instances"] == 3
    assert ext.scheduler._job_defaults["misfire_grace_time"] == 1


def test_executors_config_is_not_consumed(app: Quart) -> None:
    executors = {"default": {"type": "threadpool", "max_workers": 7}}
    app.config["SCHEDULER_EXECUTORS"] = executors
    ext = APScheduler(app=app)
    executor = ext.scheduler._executors["default"]
    assert isinstance(executor, QuartExecutor)
    assert executor.max_workers == 7
    # APScheduler pops "type" from the dict it is given: ours must survive for the next app
    assert executors == {"default": {"type": "threadpool", "max_workers": 7}}


def test_jobstores_config(app: Quart) -> None:
    store = MemoryJobStore()
    app.config["SCHEDULER_JOBSTORES"] = {"default": store, "other": {"type": "memory"}}
    ext = APScheduler(app=app)
    assert ext.scheduler.jobstore("default") is store
    assert set(ext.scheduler._jobstores) == {"default", "other"}


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("SCHEDULER_SHUTDOWN_TIMEOUT", "soon", "SCHEDULER_SHUTDOWN_TIMEOUT"),
        ("SCHEDULER_SHUTDOWN_TIMEOUT", -1, "SCHEDULER_SHUTDOWN_TIMEOUT"),
        ("SCHEDULER_JOBSTORE_RETRY_INTERVAL", float("nan"), "SCHEDULER_JOBSTORE_RETRY"),
        ("SCHEDULER_JOBS", {"id": "x"}, "SCHEDULER_JOBS must be a list"),
        ("SCHEDULER_JOBS", [{"func": "x:y"}], r"SCHEDULER_JOBS\[0\] has no 'id'"),
        ("SCHEDULER_ALLOWED_HOSTS", "web1", "must be a list"),
        ("SCHEDULER_TIMEZONE", "Mars/Olympus", "invalid scheduler configuration"),
        ("SCHEDULER_EXECUTORS", [1], "SCHEDULER_EXECUTORS must be a dict"),
        ("SCHEDULER_COORDINATION", "mysql://db/x", "SCHEDULER_COORDINATION must be"),
        ("SCHEDULER_COORDINATION", 42, "SCHEDULER_COORDINATION must be"),
        ("SCHEDULER_COORDINATION", "", "SCHEDULER_COORDINATION must be"),
        ("SCHEDULER_RERUN_INTERRUPTED", "billing-*", "SCHEDULER_RERUN_INTERRUPTED must be"),
        ("SCHEDULER_HOST_NAME", " ", "SCHEDULER_HOST_NAME must be"),
        ("SCHEDULER_CLAIM_AHEAD", "50ms", "SCHEDULER_CLAIM_AHEAD must be a number"),
        ("SCHEDULER_CLAIM_AHEAD", -0.05, "SCHEDULER_CLAIM_AHEAD must be a finite number"),
    ],
)
def test_bad_config_is_a_clear_error(app: Quart, key: str, value: Any, match: str) -> None:
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=match):
        APScheduler(app=app)


def test_flask_apscheduler_attributes(app: Quart) -> None:
    ext = APScheduler()
    ext.api_prefix = "/custom"
    app.config["SCHEDULER_ENDPOINT_PREFIX"] = "sched."
    app.config["SCHEDULER_VIEWS_ENABLED"] = False
    ext.init_app(app)
    assert ext.api_prefix == "/custom"  # attribute kept where the config is silent
    assert ext.endpoint_prefix == "sched."
    assert ext.api_enabled is False
    assert ext.allowed_hosts == ["*"]
    assert ext.auth is None
    assert ext.host_name == ext.host_name.lower()
    assert ext.config is not None and ext.config.shutdown_timeout == 2


def test_add_job_parses_iso_dates_and_defaults_name(scheduler: APScheduler) -> None:
    job = scheduler.add_job(
        "once", add, trigger="date", run_date="2030-01-02T03:04:05+02:00", args=(1, 1)
    )
    assert job.name == "once"
    assert isinstance(job.trigger, DateTrigger)
    assert job.trigger.run_date == datetime(2030, 1, 2, 1, 4, 5, tzinfo=timezone.utc)
    job = scheduler.add_job(
        "window",
        noop,
        trigger="interval",
        minutes=5,
        start_date="2030-01-01T00:00:00Z",
        end_date="2030-02-01",
        name="Windowed",
    )
    assert job.name == "Windowed"
    assert job.trigger.start_date == datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_add_job_accepts_the_legacy_trigger_dict(scheduler: APScheduler) -> None:
    job = scheduler.add_job("legacy", noop, trigger={"type": "cron", "minute": "*/5"})
    assert isinstance(job.trigger, CronTrigger)
    assert str(job.trigger.fields[6]) == "*/5"


def test_add_job_with_a_bad_date_names_the_field(scheduler: APScheduler) -> None:
    with pytest.raises(ValueError, match="run_date"):
        scheduler.add_job("bad", noop, trigger="date", run_date="tomorrow-ish")
    assert scheduler.get_jobs() == []


async def test_every_method_of_flask_apscheduler(app: Quart, scheduler: APScheduler) -> None:
    events: list[int] = []
    scheduler.add_listener(lambda e: events.append(e.code), EVENT_JOB_ADDED | EVENT_JOB_REMOVED)
    scheduler.start()
    async with app.test_app():
        scheduler.add_job("a", add, trigger="interval", hours=1, args=(1, 2))
        with pytest.raises(ConflictingIdError):
            scheduler.add_job("a", noop, trigger="interval", hours=1)
        scheduler.add_job("b", noop, trigger="cron", hour=3)
        assert [j.id for j in scheduler.get_jobs()] == ["a", "b"]

        paused = scheduler.pause_job("a")
        assert paused.next_run_time is None
        resumed = scheduler.resume_job("a")
        assert resumed is not None and resumed.next_run_time is not None

        modified = scheduler.modify_job("a", trigger="cron", minute=30, args=(2, 3))
        assert isinstance(modified.trigger, CronTrigger)
        assert modified.args == (2, 3)
        assert modified.next_run_time is not None and modified.next_run_time.minute == 30

        with pytest.raises(ValueError):
            scheduler.modify_job("a", trigger="cron", minute=61)
        unchanged = scheduler.get_job("a")
        assert unchanged is not None and unchanged.next_run_time.minute == 30  # type: ignore[union-attr]

        scheduler.remove_job("a")
        with pytest.raises(JobLookupError):
            scheduler.remove_job("a")
        scheduler.remove_all_jobs()
        assert scheduler.get_jobs() == []
    assert events == [EVENT_JOB_ADDED, EVENT_JOB_ADDED, EVENT_JOB_REMOVED]


async def test_listeners_get_execution_events(app: Quart, scheduler: APScheduler) -> None:
    executed: list[str] = []

    def listener(event: Any) -> None:
        executed.append(event.job_id)

    scheduler.add_listener(listener, EVENT_JOB_EXECUTED)
    scheduler.add_job("quick", add, trigger="interval", seconds=0.05, args=(1, 1))
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: executed)
        scheduler.remove_listener(listener)
        count = len(executed)
        await asyncio.sleep(0.15)
    assert executed[0] == "quick"
    assert len(executed) <= count + 1  # at most one event in flight when it was removed


@pytest.mark.parametrize("coalesce", [True, False])
async def test_coalesce_and_misfire_defaults(app: Quart, coalesce: bool) -> None:
    # APScheduler's own defaults are coalesce=True and misfire_grace_time=1: a run 10 s late
    # happens at all only through the configured grace time, and happens ten times only
    # through the configured coalesce=False.
    app.config["SCHEDULER_JOB_DEFAULTS"] = {"coalesce": coalesce, "misfire_grace_time": 30}
    ext = APScheduler(app=app)
    runs: list[int] = []
    ext.add_job(
        "late",
        lambda: runs.append(1),
        trigger="interval",
        seconds=1,
        next_run_time=datetime.now(timezone.utc) - timedelta(seconds=9.5),
    )
    ext.start()
    async with app.test_app():
        await wait_until(lambda: len(runs) >= (1 if coalesce else 10))
        await asyncio.sleep(0.1)
    if coalesce:
        assert runs == [1]  # ten missed fires coalesced into one run
    else:
        assert len(runs) in (10, 11)  # each missed fire runs (one more may fall due)


def test_task_redeclared_before_start_replaces_as_in_apscheduler(app: Quart) -> None:
    ext = APScheduler()

    @ext.task("interval", id="twice", seconds=10)
    def first() -> None: ...

    @ext.task("interval", id="twice", seconds=20)
    def second() -> None: ...

    ext.init_app(app)
    (job,) = ext.get_jobs()
    assert job.trigger.interval == timedelta(seconds=20)


def test_task_honours_its_jobstore(app: Quart) -> None:
    app.config["SCHEDULER_JOBSTORES"] = {
        "default": {"type": "memory"},
        "other": {"type": "memory"},
    }
    ext = APScheduler(app=app)

    @ext.task("interval", id="elsewhere", seconds=10, jobstore="other")
    def job() -> None: ...

    assert ext.scheduler._pending_jobs[-1][1] == "other"


@pytest.mark.parametrize("executor", [{"type": "processpool"}, {"type": "debug"}])
def test_coroutine_job_on_an_executor_that_cannot_await_it_is_refused(
    app: Quart, executor: dict[str, Any]
) -> None:
    app.config["SCHEDULER_EXECUTORS"] = {"default": {"type": "threadpool"}, "other": executor}
    ext = APScheduler(app=app)

    async def coro() -> None: ...

    with pytest.raises(ValueError, match="would never await"):
        ext.add_job("coro", coro, trigger="interval", seconds=5, executor="other")
    assert ext.get_jobs() == []
    ext.add_job("plain", noop, trigger="interval", seconds=5, executor="other")


@pytest.mark.parametrize("word", ["off", "Off", " false ", "NONE", "no", "0"])
async def test_coordination_off_as_a_word_turns_it_off(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, word: str
) -> None:
    """From an environment variable, "off" means off: never a directory named "off"."""
    monkeypatch.chdir(tmp_path)
    app = Quart("coordination_word", instance_path=str(tmp_path / "instance"))
    app.config.update(
        SCHEDULER_COORDINATION=word, SCHEDULER_HISTORY=False, SCHEDULER_API_ENABLED=True
    )
    ext = APScheduler(app=app)
    ext.start()
    async with app.test_app():
        response = await app.test_client().get("/scheduler")
        body = await response.get_json()
    assert response.status_code == 200
    assert body["coordination"] is None and body["role"] == "leader"
    # The instance folder holds the warning lock of coordination off; no other directory.
    assert [path.name for path in tmp_path.iterdir()] == ["instance"]
