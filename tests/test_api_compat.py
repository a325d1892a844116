"""The REST API keeps every promise a Flask-APScheduler client relies on.

Driven through Quart's test client against a real scheduler on the test's loop:

* the 13 routes, under the default and a custom prefix, with Flask-APScheduler's endpoint
  names, and the three ways of enabling them (none of them when disabled);
* job JSON: the keys, their order and their values are those of Flask-APScheduler's own
  ``job_to_dict`` for the same job objects (then our ``running_instances``), datetimes
  are ISO 8601 with an offset, and a paused job's ``next_run_time`` is null;
* status codes (200/204/400/404/409/500/202), bodies with or without a Content-Type;
* the job life cycle over the API (add, list, patch, pause, resume, run, delete);
* ``POST /jobs/<id>/run`` through the executor, with ``max_instances``, ``?wait=false``
  and ``SCHEDULER_API_RUN_TIMEOUT``;
* ``next_run_times`` across a DST change, ``/functions``, and Basic auth with sync and
  async callbacks.

Job functions are module-level here so the API can reference them as
``test_api_compat:<name>`` (pytest puts the tests directory on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from flask_apscheduler.utils import (  # type: ignore[import-untyped]
    job_to_dict as flask_job_to_dict,
)
from quart import Quart, current_app, url_for

from quart_sched import STATE_PAUSED, STATE_RUNNING, APScheduler, SchedulerNotRunningError
from quart_sched.auth import HTTPBasicAuth

from support import wait_until

MOD = __name__  # "test_api_compat": how the API refers to the job functions below
PARIS = ZoneInfo("Europe/Paris")

#: Flask-APScheduler's 13 routes: (view name, rule under the prefix, method).
ROUTES = (
    ("get_scheduler_info", "", "GET"),
    ("pause_scheduler", "/pause", "POST"),
    ("resume_scheduler", "/resume", "POST"),
    ("start_scheduler", "/start", "POST"),
    ("shutdown_scheduler", "/shutdown", "POST"),
    ("add_job", "/jobs", "POST"),
    ("get_job", "/jobs/<job_id>", "GET"),
    ("get_jobs", "/jobs", "GET"),
    ("delete_job", "/jobs/<job_id>", "DELETE"),
    ("update_job", "/jobs/<job_id>", "PATCH"),
    ("pause_job", "/jobs/<job_id>/pause", "POST"),
    ("resume_job", "/jobs/<job_id>/resume", "POST"),
    ("run_job", "/jobs/<job_id>/run", "POST"),
)

# ------------------------------------------------------------------------ job functions

#: (tag, current_app.name) of every run of record()/record_plain().
SEEN: list[tuple[str, str]] = []
#: Events that gated() jobs wait on, by key; tests set them before they end.
GATES: dict[str, asyncio.Event] = {}


async def noop() -> None:
    pass


async def record(tag: str, **extra: Any) -> str:
    SEEN.append((tag, current_app.name))
    return tag


def record_plain(tag: str) -> str:
    SEEN.append((tag, current_app.name))
    return tag


async def explode() -> None:
    raise RuntimeError("kaboom 42")


async def gated(key: str) -> None:
    await GATES[key].wait()


async def config_job() -> None:
    pass


async def task_job() -> None:
    pass


async def code_job() -> None:
    pass


async def registered_job() -> None:
    pass


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def api_config() -> dict[str, Any]:
    """Extra app config for `api`; tests override it with ``parametrize("api_config")``."""
    return {}


@pytest.fixture
def api(app: Quart, api_config: dict[str, Any]) -> Iterator[APScheduler]:
    """An extension with the API enabled; this module's functions may be scheduled."""
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=[f"{MOD}:*"])
    app.config.update(api_config)
    ext = APScheduler(app=app)
    yield ext
    if ext.running:
        ext.shutdown(wait=False)


@pytest.fixture
async def served(app: Quart, api: APScheduler) -> AsyncIterator[APScheduler]:
    """`api` started, with the app serving (before_serving ran)."""
    api.start()
    async with app.test_app():
        yield api


# ------------------------------------------------------------------------------ helpers


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def plain(value: Any) -> Any:
    """A value of Flask-APScheduler's job dict as its JSON encoder writes it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def reference(job: Job) -> dict[str, Any]:
    """Flask-APScheduler's ``job_to_dict`` of ``job``, as JSON would carry it."""
    return {key: plain(value) for key, value in flask_job_to_dict(job).items()}


def body_of(job_id: str, **fields: Any) -> str:
    """A job definition as a raw JSON string (sent without a Content-Type header)."""
    return json.dumps({"id": job_id, **fields})


async def error_message(response: Any) -> str:
    data = await response.get_json()
    assert isinstance(data, dict), data
    # Flask-APScheduler's one key first; a 400 adds the field at fault.
    expected = ["error_message", "field"] if response.status_code == 400 else ["error_message"]
    assert list(data) == expected, data
    message = data["error_message"]
    assert isinstance(message, str) and message
    return message


def running_instances(ext: APScheduler, job_id: str) -> int:
    job = ext.get_job(job_id)
    assert job is not None
    count: int = ext.job_to_dict(job)["running_instances"]
    return count


# ------------------------------------------------------------------ routes and switches


@pytest.mark.parametrize(
    "api_config",
    [{}, {"SCHEDULER_API_PREFIX": "/api/v2/sched", "SCHEDULER_ENDPOINT_PREFIX": "sched_"}],
    ids=["default-prefix", "custom-prefix"],
)
async def test_routes_and_endpoint_names(
    app: Quart, served: APScheduler, api_config: dict[str, Any]
) -> None:
    prefix = api_config.get("SCHEDULER_API_PREFIX", "/scheduler")
    endpoint_prefix = api_config.get("SCHEDULER_ENDPOINT_PREFIX", "scheduler.")
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    async with app.test_request_context("/"):
        for view, rule, method in ROUTES:
            registered = rules[endpoint_prefix + view]
            assert registered.rule == prefix + rule
            assert registered.methods is not None and method in registered.methods
            values: dict[str, Any] = {"job_id": "job-1"} if "<job_id>" in rule else {}
            assert url_for(endpoint_prefix + view, **values) == prefix + rule.replace(
                "<job_id>", "job-1"
            )

    # Each route answers as the API (JSON errors), not as the router (HTML 404 / 405).
    client = app.test_client()
    jobs = prefix + "/jobs"
    assert (await client.get(prefix)).status_code == 200
    assert (await client.get(jobs)).status_code == 200
    assert (await client.post(prefix + "/pause")).status_code == 204
    assert (await client.post(prefix + "/resume")).status_code == 204
    assert (await client.post(prefix + "/start")).status_code == 400
    response = await client.post(
        jobs, data=body_of("job-1", func=f"{MOD}:noop", trigger="interval", hours=1)
    )
    assert response.status_code == 200
    for method, path in [
        ("GET", "/nope"),
        ("PATCH", "/nope"),
        ("POST", "/nope/pause"),
        ("POST", "/nope/resume"),
        ("POST", "/nope/run"),
        ("DELETE", "/nope"),
    ]:
        response = await client.open(jobs + path, method=method, data='{"name": "x"}')
        assert response.status_code == 404, (method, path)
        assert "nope" in await error_message(response)
    assert (await client.delete(jobs + "/job-1")).status_code == 204
    assert (await client.post(prefix + "/shutdown", data='{"wait": false}')).status_code == 204
    assert not served.running


def _enable(app: Quart, how: str) -> APScheduler:
    ext = APScheduler()
    if how == "SCHEDULER_API_ENABLED":
        app.config["SCHEDULER_API_ENABLED"] = True
    elif how == "SCHEDULER_VIEWS_ENABLED":
        app.config["SCHEDULER_VIEWS_ENABLED"] = True
    elif how == "attribute":
        ext.api_enabled = True
    elif how == "views-overridden":  # SCHEDULER_API_ENABLED wins, as in Flask-APScheduler
        app.config.update(SCHEDULER_VIEWS_ENABLED=True, SCHEDULER_API_ENABLED=False)
    elif how == "attribute-overridden":
        ext.api_enabled = True
        app.config["SCHEDULER_API_ENABLED"] = False
    else:
        assert how == "default"
    ext.init_app(app)
    return ext


@pytest.mark.parametrize("how", ["SCHEDULER_API_ENABLED", "SCHEDULER_VIEWS_ENABLED", "attribute"])
async def test_api_enabled(app: Quart, how: str) -> None:
    ext = _enable(app, how)
    assert ext.api_enabled
    client = app.test_client()
    response = await client.get("/scheduler")
    assert response.status_code == 200
    assert (await response.get_json())["running"] is False
    assert (await client.get("/scheduler/jobs")).status_code == 200


@pytest.mark.parametrize("how", ["default", "views-overridden", "attribute-overridden"])
async def test_api_disabled_registers_nothing(app: Quart, how: str) -> None:
    ext = _enable(app, how)
    assert not ext.api_enabled
    assert not [r for r in app.url_map.iter_rules() if r.endpoint.startswith("scheduler.")]
    client = app.test_client()
    for path in ("/scheduler", "/scheduler/jobs", "/scheduler/jobs/x"):
        assert (await client.get(path)).status_code == 404
    assert (await client.post("/scheduler/start")).status_code == 404
    assert not ext.running


# ----------------------------------------------------------------------------- job JSON


def _add_reference_jobs(ext: APScheduler) -> dict[str, list[str]]:
    """Jobs of every trigger kind; returns the keys each must show, in order."""
    head = ["id", "name", "func", "args", "kwargs", "trigger"]
    tail = [
        "misfire_grace_time",
        "max_instances",
        "next_run_time",
        "running_instances",
        "trigger_description",
        "load_error",
        "last_run",
    ]
    ext.add_job(
        "date",
        record,
        trigger="date",
        run_date="2030-01-02T03:04:05+01:00",
        args=["d"],
        kwargs={"k": 1},
    )
    ext.add_job(
        "interval-90m",
        noop,
        trigger="interval",
        minutes=90,
        start_date="2030-01-01T00:00:00",
        end_date="2031-01-01T00:00:00",
    )
    ext.add_job("interval-mixed", noop, trigger="interval", weeks=1, days=2, seconds=3)
    ext.add_job(
        "cron", noop, trigger="cron", day_of_week="mon-fri", hour=2, minute="*/15", name="Cron"
    )
    ext.add_job(
        "cron-dated",
        noop,
        trigger="cron",
        month=6,
        start_date="2030-01-01T00:00:00",
        end_date="2031-01-01T00:00:00",
        misfire_grace_time=30,
        max_instances=3,
    )
    ext.add_job("paused", noop, trigger="interval", hours=1)
    ext.pause_job("paused")
    return {
        "date": [*head, "run_date", *tail],
        "interval-90m": [*head, "start_date", "end_date", "hours", "minutes", *tail],
        "interval-mixed": [*head, "start_date", "weeks", "days", "seconds", *tail],
        "cron": [*head, "day_of_week", "hour", "minute", *tail],
        "cron-dated": [*head, "start_date", "end_date", "month", *tail],
        "paused": [*head, "start_date", "hours", *tail],
    }


@pytest.mark.parametrize("api_config", [{"SCHEDULER_TIMEZONE": "Europe/Paris"}])
async def test_job_json_matches_flask_apscheduler(app: Quart, served: APScheduler) -> None:
    expected_keys = _add_reference_jobs(served)
    client = app.test_client()
    bodies: dict[str, dict[str, Any]] = {}
    for job_id, keys in expected_keys.items():
        response = await client.get(f"/scheduler/jobs/{job_id}")
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        body = await response.get_json()
        job = served.get_job(job_id)
        assert job is not None
        ref = reference(job)
        assert list(body) == keys
        ours = ["running_instances", "trigger_description", "load_error", "last_run"]
        assert list(body) == [*ref, *ours]  # theirs, then ours
        assert {key: body[key] for key in ref} == ref  # and its values
        assert body["running_instances"] == 0
        bodies[job_id] = body

    listed = await (await client.get("/scheduler/jobs")).get_json()
    assert {job["id"]: job for job in listed} == bodies
    for job in listed:
        assert list(job) == expected_keys[job["id"]]

    date = bodies["date"]
    assert (date["func"], date["args"], date["kwargs"]) == (f"{MOD}:record", ["d"], {"k": 1})
    assert date["name"] == "date"  # name defaults to the id
    assert date["run_date"] == "2030-01-02T03:04:05+01:00"
    assert date["next_run_time"] == "2030-01-02T03:04:05+01:00"
    interval = bodies["interval-90m"]
    assert (interval["hours"], interval["minutes"]) == (1, 30)
    assert interval["start_date"] == "2030-01-01T00:00:00+01:00"  # naive: scheduler's zone
    mixed = bodies["interval-mixed"]
    assert (mixed["weeks"], mixed["days"], mixed["seconds"]) == (1, 2, 3)
    cron = bodies["cron"]
    assert (cron["name"], cron["day_of_week"], cron["hour"], cron["minute"]) == (
        "Cron",
        "mon-fri",
        "2",
        "*/15",
    )
    dated = bodies["cron-dated"]
    assert dated["month"] == "6"
    assert (dated["misfire_grace_time"], dated["max_instances"]) == (30, 3)
    assert (cron["misfire_grace_time"], cron["max_instances"]) == (1, 1)  # APScheduler's
    assert bodies["paused"]["next_run_time"] is None

    for body in bodies.values():
        for key in ("run_date", "start_date", "end_date", "next_run_time"):
            if body.get(key) is not None:
                assert datetime.fromisoformat(body[key]).tzinfo is not None, (body["id"], key)


# ------------------------------------------------------------------------- status codes


async def test_scheduler_info(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    info = await (await client.get("/scheduler")).get_json()
    # Flask-APScheduler's keys, then ours.
    assert list(info) == [
        "current_host",
        "allowed_hosts",
        "running",
        "state",
        "role",
        "leader",
        "coordination",
    ]
    leader = info.pop("leader")
    assert info == {
        "current_host": socket.gethostname().lower(),
        "allowed_hosts": ["*"],
        "running": True,
        "state": "running",
        "role": "leader",
        "coordination": {"backend": "file", "location": app.instance_path, "error": None},
    }
    assert leader["pid"] == os.getpid() and leader["host"] == socket.gethostname().lower()
    served.pause()
    info = await (await client.get("/scheduler")).get_json()
    assert (info["running"], info["state"]) == (True, "paused")
    served.shutdown()
    info = await (await client.get("/scheduler")).get_json()
    assert (info["running"], info["state"]) == (False, "stopped")


@pytest.mark.parametrize("api_config", [{"SCHEDULER_ALLOWED_HOSTS": ["*", "web-2"]}])
async def test_scheduler_info_shows_allowed_hosts(app: Quart, served: APScheduler) -> None:
    info = await (await app.test_client().get("/scheduler")).get_json()
    assert info["allowed_hosts"] == ["*", "web-2"]


@pytest.mark.parametrize("api_config", [{"SCHEDULER_SHUTDOWN_TIMEOUT": 0.2}])
async def test_shutdown_without_wait_leaves_running_jobs_running(
    app: Quart, served: APScheduler
) -> None:
    # With wait (the default), a job still running after SCHEDULER_SHUTDOWN_TIMEOUT is
    # cancelled; {"wait": false} leaves it alone.
    steps: list[str] = []

    async def slow() -> None:
        steps.append("started")
        await asyncio.sleep(0.6)
        steps.append("finished")

    served.add_job("slow", slow, trigger="date")
    await wait_until(lambda: steps)
    response = await app.test_client().post("/scheduler/shutdown", data='{"wait": false}')
    assert response.status_code == 204
    await wait_until(lambda: "finished" in steps, timeout=3)


async def test_scheduler_start_shutdown_pause_resume(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    response = await client.post("/scheduler/start")
    assert response.status_code == 400  # already running
    await error_message(response)

    response = await client.post("/scheduler/pause")
    assert (response.status_code, await response.get_data()) == (204, b"")
    assert served.state == STATE_PAUSED
    response = await client.post("/scheduler/resume")
    assert (response.status_code, await response.get_data()) == (204, b"")
    assert served.state == STATE_RUNNING

    # {"wait": false} without a Content-Type header, as curl -d sends it
    response = await client.post("/scheduler/shutdown", data='{"wait": false}')
    assert (response.status_code, await response.get_data()) == (204, b"")
    assert not served.running
    response = await client.post("/scheduler/shutdown", json={"wait": False})
    assert response.status_code == 400  # not running
    await error_message(response)

    response = await client.post("/scheduler/start")
    assert (response.status_code, await response.get_data()) == (204, b"")
    assert served.running
    response = await client.post("/scheduler/shutdown")  # no body: wait=True
    assert response.status_code == 204
    assert not served.running


async def test_unknown_job_is_404_with_error_message(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    for method, path in [
        ("GET", "/scheduler/jobs/ghost"),
        ("DELETE", "/scheduler/jobs/ghost"),
        ("PATCH", "/scheduler/jobs/ghost"),
        ("POST", "/scheduler/jobs/ghost/pause"),
        ("POST", "/scheduler/jobs/ghost/resume"),
        ("POST", "/scheduler/jobs/ghost/run"),
    ]:
        response = await client.open(path, method=method, data='{"name": "renamed"}')
        assert response.status_code == 404, (method, path)
        assert "ghost" in await error_message(response)
    assert served.get_jobs() == []


async def test_duplicate_id_is_409(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    first = body_of("twice", func=f"{MOD}:noop", trigger="interval", hours=1)
    assert (await client.post("/scheduler/jobs", data=first)).status_code == 200
    second = body_of("twice", func=f"{MOD}:record", args=["x"], trigger="interval", hours=2)
    response = await client.post("/scheduler/jobs", data=second)
    assert response.status_code == 409
    assert "twice" in await error_message(response)
    job = served.get_job("twice")
    assert job is not None and job.func_ref == f"{MOD}:noop"  # unchanged


@pytest.mark.parametrize("content_type", [None, "application/json"])
async def test_json_bodies_with_or_without_content_type(
    app: Quart, served: APScheduler, content_type: str | None
) -> None:
    client = app.test_client()
    headers = {"Content-Type": content_type} if content_type else {}
    body = body_of("ct", func=f"{MOD}:noop", trigger="interval", minutes=5)
    response = await client.post("/scheduler/jobs", data=body, headers=headers)
    assert response.status_code == 200, await response.get_data()
    response = await client.patch("/scheduler/jobs/ct", data='{"name": "n"}', headers=headers)
    assert response.status_code == 200
    assert (await response.get_json())["name"] == "n"


# ----------------------------------------------------------------------- job life cycle


async def test_add_list_patch_pause_resume_delete(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    response = await client.post(
        "/scheduler/jobs",
        data=body_of("life", func=f"{MOD}:record", args=["a"], trigger="interval", hours=1),
    )
    assert response.status_code == 200
    added = await response.get_json()
    assert (added["id"], added["name"], added["args"], added["hours"]) == (
        "life",
        "life",
        ["a"],
        1,
    )
    listed = await (await client.get("/scheduler/jobs")).get_json()
    assert [job["id"] for job in listed] == ["life"]
    assert listed[0] == added

    # name and args change; the schedule does not
    response = await client.patch(
        "/scheduler/jobs/life", data='{"name": "renamed", "args": ["b"], "kwargs": {}}'
    )
    assert response.status_code == 200
    patched = await response.get_json()
    assert (patched["name"], patched["args"]) == ("renamed", ["b"])
    assert patched["next_run_time"] == added["next_run_time"]
    assert await (await client.get("/scheduler/jobs/life")).get_json() == patched

    # an `id` equal to the URL's is fine
    response = await client.patch("/scheduler/jobs/life", data='{"id": "life", "name": "same"}')
    assert response.status_code == 200
    assert (await response.get_json())["name"] == "same"

    # an `id` naming another job, or a bad trigger argument: 400, and nothing changes
    for bad in ('{"id": "other", "name": "x"}', '{"trigger": "cron", "hour": "nope"}'):
        response = await client.patch("/scheduler/jobs/life", data=bad)
        assert response.status_code == 400, bad
        await error_message(response)
    unchanged = await (await client.get("/scheduler/jobs/life")).get_json()
    assert (unchanged["name"], unchanged["trigger"]) == ("same", "interval")
    assert unchanged["next_run_time"] == added["next_run_time"]

    # a trigger change reschedules
    response = await client.patch(
        "/scheduler/jobs/life", data='{"trigger": "cron", "hour": 3, "minute": 7}'
    )
    assert response.status_code == 200
    cron = await response.get_json()
    assert (cron["trigger"], cron["hour"], cron["minute"]) == ("cron", "3", "7")
    assert "hours" not in cron
    assert cron["next_run_time"] != added["next_run_time"]
    next_run = datetime.fromisoformat(cron["next_run_time"])
    assert (next_run.hour, next_run.minute) == (3, 7)
    assert timedelta(0) < next_run - datetime.now(timezone.utc) <= timedelta(days=1)

    # Flask-APScheduler's legacy {"trigger": {"type": ...}} form
    response = await client.patch(
        "/scheduler/jobs/life", data='{"trigger": {"type": "interval", "minutes": 90}}'
    )
    assert response.status_code == 200
    legacy = await response.get_json()
    assert (legacy["trigger"], legacy["hours"], legacy["minutes"]) == ("interval", 1, 30)

    response = await client.post("/scheduler/jobs/life/pause")
    assert response.status_code == 200
    paused = await response.get_json()
    assert paused["next_run_time"] is None
    assert (await (await client.get("/scheduler/jobs/life")).get_json())["next_run_time"] is None
    response = await client.post("/scheduler/jobs/life/resume")
    assert response.status_code == 200
    resumed = await response.get_json()
    assert resumed["next_run_time"] is not None
    assert datetime.fromisoformat(resumed["next_run_time"]) > datetime.now(timezone.utc)
    assert {k: v for k, v in resumed.items() if k != "next_run_time"} == {
        k: v for k, v in paused.items() if k != "next_run_time"
    }

    response = await client.delete("/scheduler/jobs/life")
    assert (response.status_code, await response.get_data()) == (204, b"")
    assert (await client.get("/scheduler/jobs/life")).status_code == 404
    assert await (await client.get("/scheduler/jobs")).get_json() == []


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ('{"name": "renamed"}', {"name": "renamed"}),
        ('{"args": [1]}', {"args": [1]}),
        ('{"trigger": "interval", "hours": 2}', {"trigger": "interval", "hours": 2}),
    ],
    ids=["name", "args", "trigger"],
)
async def test_patch_while_the_scheduler_is_stopped(
    app: Quart, api: APScheduler, patch: str, expected: dict[str, Any]
) -> None:
    # Flask-APScheduler modifies pending jobs (added before start) like any other.
    api.add_job("pending", record, trigger="interval", hours=1, args=["p"])
    response = await app.test_client().patch("/scheduler/jobs/pending", data=patch)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body = await response.get_json()
    assert {key: body[key] for key in expected} == expected
    api.start()  # the change survives the start
    shown = await (await app.test_client().get("/scheduler/jobs/pending")).get_json()
    assert {key: shown[key] for key in expected} == expected
    assert shown["next_run_time"] is not None


def store_config(store: str, tmp_path: Any) -> dict[str, Any]:
    """``SCHEDULER_JOBSTORES`` for ``"memory"`` (the default) or a SQLite file."""
    if store == "memory":
        return {}
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    return {"SCHEDULER_JOBSTORES": {"default": SQLAlchemyJobStore(url=url)}}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_patch_to_a_date_due_now_answers_the_job_it_wrote(
    app: Quart, tmp_path: Any, store: str
) -> None:
    # {"trigger": "date"} is due at once: the scheduler may run and remove the job before
    # the answer is written. The write took effect, so the answer is 200 with the job as
    # it was right after the change, never 404.
    app.config.update(store_config(store, tmp_path))
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=[f"{MOD}:*"])
    ext = APScheduler(app=app)
    tag = f"patched-to-date-{store}"
    ext.add_job("soon", f"{MOD}:record", trigger="interval", hours=1, args=[tag])
    ext.start()
    async with app.test_app():
        for _attempt in range(3):  # the race is the scheduler's; give it a few chances
            response = await app.test_client().patch(
                "/scheduler/jobs/soon", data='{"trigger": "date"}'
            )
            assert response.status_code == 200, await response.get_data(as_text=True)
            body = await response.get_json()
            assert (body["id"], body["trigger"], body["args"]) == ("soon", "date", [tag])
            assert body["next_run_time"] == body["run_date"]
            # Taken (and removed: a fire is recorded before it runs), then run.
            await wait_until(lambda: ext.get_job("soon") is None)
            ext.add_job("soon", f"{MOD}:record", trigger="interval", hours=1, args=[tag])
        await wait_until(lambda: SEEN.count((tag, app.name)) == 3)


# ---------------------------------------------------------------------- POST .../run


@pytest.mark.parametrize("func", [record, record_plain], ids=["coroutine", "plain"])
async def test_run_job_runs_through_the_executor_in_app_context(
    app: Quart, served: APScheduler, func: Any
) -> None:
    events: list[JobExecutionEvent] = []
    served.add_listener(events.append, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    tag = f"run-{func.__name__}"
    job = served.add_job("runner", func, trigger="interval", hours=1, args=[tag])
    before = job.next_run_time

    response = await app.test_client().post("/scheduler/jobs/runner/run")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["id"] == "runner" and body["running_instances"] == 0
    assert SEEN.count((tag, app.name)) == 1  # ran once, with the app's context
    assert [(e.code, e.job_id, e.retval) for e in events] == [(EVENT_JOB_EXECUTED, "runner", tag)]
    assert datetime.fromisoformat(body["next_run_time"]) == before  # schedule untouched


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_run_job_after_shutdown_says_the_scheduler_is_not_running(
    app: Quart, tmp_path: Any, store: str
) -> None:
    # Once shut down, APScheduler looks jobs up among its pending ones only: a job in a
    # persistent store seemed not to exist (404). Every store answers the same 400.
    app.config.update(store_config(store, tmp_path))
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=[f"{MOD}:*"])
    ext = APScheduler(app=app)
    tag = f"run-after-shutdown-{store}"
    ext.add_job("stopped", f"{MOD}:record", trigger="interval", hours=1, args=[tag])
    ext.start()
    async with app.test_app():
        client = app.test_client()
        assert (await client.post("/scheduler/shutdown")).status_code == 204
        for job_id in ("stopped", "ghost"):
            response = await client.post(f"/scheduler/jobs/{job_id}/run")
            assert response.status_code == 400, await response.get_data(as_text=True)
            message = await error_message(response)
            assert message == "the scheduler is not running: POST /start first"
        assert (tag, app.name) not in SEEN
        with pytest.raises(SchedulerNotRunningError):  # the Python API says the same
            ext.run_job("stopped")

        assert (await client.post("/scheduler/start")).status_code == 204
        response = await client.post("/scheduler/jobs/stopped/run")
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert SEEN.count((tag, app.name)) == 1


async def test_run_job_failure_is_500_with_the_message(app: Quart, served: APScheduler) -> None:
    served.add_job("exploding", explode, trigger="interval", hours=1)
    response = await app.test_client().post("/scheduler/jobs/exploding/run")
    assert response.status_code == 500
    assert "kaboom 42" in await error_message(response)
    assert served.get_job("exploding") is not None


async def test_run_job_without_waiting_and_max_instances(app: Quart, served: APScheduler) -> None:
    client = app.test_client()
    GATES["nowait"] = gate = asyncio.Event()
    served.add_job("blocked", gated, trigger="interval", hours=1, args=["nowait"])
    served.add_job("twice", gated, trigger="interval", hours=1, args=["nowait"], max_instances=2)
    try:
        started = time.monotonic()
        response = await client.post("/scheduler/jobs/blocked/run?wait=false")
        assert response.status_code == 202
        assert time.monotonic() - started < 5.0  # far below the 30 s run timeout
        assert (await response.get_json())["running_instances"] == 1
        shown = await (await client.get("/scheduler/jobs/blocked")).get_json()
        assert shown["running_instances"] == 1  # still running: blocked on the gate

        response = await client.post("/scheduler/jobs/blocked/run?wait=false")
        assert response.status_code == 409  # max_instances=1
        assert "max_instances" in await error_message(response)
        response = await client.post("/scheduler/jobs/blocked/run")
        assert response.status_code == 409

        for expected in (1, 2):
            response = await client.post("/scheduler/jobs/twice/run?wait=false")
            assert response.status_code == 202
            assert (await response.get_json())["running_instances"] == expected
        assert (await client.post("/scheduler/jobs/twice/run?wait=false")).status_code == 409
    finally:
        gate.set()
    await wait_until(lambda: running_instances(served, "blocked") == 0)
    await wait_until(lambda: running_instances(served, "twice") == 0)
    # a finished run frees its slot
    response = await client.post("/scheduler/jobs/blocked/run")
    assert response.status_code == 200
    assert (await response.get_json())["running_instances"] == 0


@pytest.mark.parametrize("api_config", [{"SCHEDULER_API_RUN_TIMEOUT": 0.2}])
async def test_run_job_slower_than_the_timeout_is_202(app: Quart, served: APScheduler) -> None:
    GATES["slow"] = gate = asyncio.Event()
    served.add_job("slow", gated, trigger="interval", hours=1, args=["slow"])
    try:
        started = time.monotonic()
        response = await app.test_client().post("/scheduler/jobs/slow/run")
        elapsed = time.monotonic() - started
        assert response.status_code == 202
        assert 0.2 <= elapsed < 10.0
        body = await response.get_json()
        assert (body["id"], body["running_instances"]) == ("slow", 1)
        assert running_instances(served, "slow") == 1  # it goes on after the answer
    finally:
        gate.set()
    await wait_until(lambda: running_instances(served, "slow") == 0)


# -------------------------------------------------------------------- next_run_times


def spring_forward_after(today: date) -> date:
    """The next last Sunday of March (when Paris goes 02:00 -> 03:00) at least 2 days away."""
    for year in (today.year, today.year + 1):
        last = date(year, 3, 31)
        sunday = last - timedelta(days=(last.weekday() + 1) % 7)
        if sunday - today > timedelta(days=2):
            return sunday
    raise AssertionError("unreachable")


@pytest.mark.parametrize("api_config", [{"SCHEDULER_TIMEZONE": "Europe/Paris"}])
async def test_next_run_times_across_dst(app: Quart, served: APScheduler) -> None:
    change = spring_forward_after(datetime.now(PARIS).date())  # 2027-03-28 as written
    days = [change + timedelta(days=offset) for offset in (-2, -1, 0, 1, 2)]
    client = app.test_client()
    body = body_of(
        "dst",
        func=f"{MOD}:noop",
        trigger="cron",
        hour=2,
        minute=30,
        start_date=f"{days[0]}T00:00:00",  # naive: the scheduler's zone
    )
    assert (await client.post("/scheduler/jobs", data=body)).status_code == 200

    response = await client.get("/scheduler/jobs/dst/next_run_times?n=5")
    assert response.status_code == 200
    data = await response.get_json()
    assert list(data) == ["id", "next_run_times"] and data["id"] == "dst"
    times = data["next_run_times"]
    assert times[:2] == [f"{days[0]}T02:30:00+01:00", f"{days[1]}T02:30:00+01:00"]
    assert times[3:] == [f"{days[3]}T02:30:00+02:00", f"{days[4]}T02:30:00+02:00"]
    # 02:30 does not exist on the day of the change. As cron does, the job runs once, at
    # the first instant after the gap, 03:00 CEST (APScheduler's own trigger: 03:30).
    assert times[2] == f"{change}T03:00:00+02:00"
    skipped = datetime.fromisoformat(times[2])
    assert skipped.astimezone(timezone.utc) == datetime(
        change.year, change.month, change.day, 1, 0, tzinfo=timezone.utc
    )
    instants = [datetime.fromisoformat(t) for t in times]
    assert all(t.tzinfo is not None for t in instants)
    assert instants == sorted(instants) and len(set(instants)) == 5

    default = await (await client.get("/scheduler/jobs/dst/next_run_times")).get_json()
    assert default["next_run_times"] == times  # n defaults to 5
    many = await (await client.get("/scheduler/jobs/dst/next_run_times?n=100")).get_json()
    assert len(many["next_run_times"]) == 100 and many["next_run_times"][:5] == times

    for bad in ("0", "101", "x", "-1", "", "2.5"):
        response = await client.get(f"/scheduler/jobs/dst/next_run_times?n={bad}")
        assert response.status_code == 400, bad
        assert "n must be" in await error_message(response)
    response = await client.get("/scheduler/jobs/ghost/next_run_times?n=5")
    assert response.status_code == 404


# ------------------------------------------------------------------------- /functions


async def test_functions_lists_code_and_config_jobs_and_patterns(app: Quart) -> None:
    app.config.update(
        SCHEDULER_API_ENABLED=True,
        SCHEDULER_JOBS=[
            {"id": "from-config", "func": f"{MOD}:config_job", "trigger": "interval", "hours": 1}
        ],
        SCHEDULER_API_ALLOWED_FUNCS=["jobfuncs:*", "reports.*:send_*"],
    )
    ext = APScheduler()
    ext.task("interval", id="from-task", hours=1)(task_job)  # declared before init_app
    ext.init_app(app)
    ext.add_job("from-code", code_job, trigger="interval", hours=1)
    ext.api_function(registered_job)
    ext.start()
    try:
        async with app.test_app():
            client = app.test_client()
            response = await client.get("/scheduler/functions")
            assert response.status_code == 200
            data = await response.get_json()
            assert data == {
                "functions": sorted(
                    f"{MOD}:{name}"
                    for name in ("config_job", "task_job", "code_job", "registered_job")
                ),
                "patterns": ["jobfuncs:*", "reports.*:send_*"],
            }
            for index, (func, status) in enumerate(
                [
                    ("jobfuncs:tick", 200),  # matches a pattern
                    (f"{MOD}:code_job", 200),  # a code job's function
                    (f"{MOD}:noop", 403),  # importable, but not allowed
                    (f"{MOD}:no_such_function", 403),  # refused before any import
                    ("os:system", 403),
                ]
            ):
                args = ["x"] if func == "jobfuncs:tick" else []
                body = body_of(f"api-{index}", func=func, args=args, trigger="interval", hours=1)
                response = await client.post("/scheduler/jobs", data=body)
                assert response.status_code == status, (func, await response.get_data())
            assert sorted(job.id for job in ext.get_jobs()) == [
                "api-0",
                "api-1",
                "from-code",
                "from-config",
                "from-task",
            ]
    finally:
        if ext.running:
            ext.shutdown(wait=False)


# ------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_basic_auth_with_sync_or_async_callback(app: Quart, kind: str) -> None:
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_AUTH=HTTPBasicAuth())
    ext = APScheduler(app=app)
    seen: list[dict[str, Any]] = []

    def check(auth: Any) -> bool:
        seen.append(dict(auth))
        return bool(auth["username"] == "guest" and auth["password"] == "pa:ss")

    async def acheck(auth: Any) -> bool:
        await asyncio.sleep(0)
        return check(auth)

    ext.authenticate(check if kind == "sync" else acheck)
    client = app.test_client()

    response = await client.get("/scheduler")
    assert response.status_code == 401
    assert await response.get_data(as_text=True) == "Access Denied"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
    assert seen == []  # no credentials: the callback is not asked

    response = await client.get("/scheduler", headers=basic("guest", "wrong"))
    assert response.status_code == 401
    assert await response.get_data(as_text=True) == "Access Denied"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'

    response = await client.get("/scheduler", headers=basic("guest", "pa:ss"))
    assert response.status_code == 200
    assert seen[-1] == {"auth_type": "basic", "username": "guest", "password": "pa:ss"}

    # every route is guarded
    for _view, rule, method in ROUTES:
        path = "/scheduler" + rule.replace("<job_id>", "x")
        response = await client.open(path, method=method, data="{}")
        assert response.status_code == 401, (method, path)
    assert not ext.running


async def test_job_added_before_start_shows_its_defaults_not_a_pause(
    app: Quart, api: APScheduler
) -> None:
    api.add_job("early", noop, trigger="interval", minutes=5)
    response = await app.test_client().get("/scheduler/jobs/early")
    data = await response.get_json()
    assert data["misfire_grace_time"] == 1
    assert data["max_instances"] == 1
    assert data["next_run_time"] is not None  # not paused: the first fire time it will get
    assert datetime.fromisoformat(data["next_run_time"]) > datetime.now(timezone.utc)


async def test_resuming_a_job_whose_schedule_ended_answers_null(
    app: Quart, served: APScheduler
) -> None:
    ended = datetime.now(timezone.utc) + timedelta(milliseconds=300)
    served.add_job("ending", noop, trigger="interval", seconds=10, end_date=ended)
    served.pause_job("ending")
    await asyncio.sleep(0.4)
    response = await app.test_client().post("/scheduler/jobs/ending/resume")
    assert response.status_code == 200  # as Flask-APScheduler: 200 with a null body
    assert await response.get_json() is None
    assert served.get_job("ending") is None
