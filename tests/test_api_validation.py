"""Bad input to the REST API is a 400 naming the field, never a 500, and changes nothing.

Every rejected request is checked twice: the answer (status 400, a JSON
``error_message`` that names the field at fault) and the state (``GET /scheduler/jobs``,
or the patched job's JSON, is exactly what it was before).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from apscheduler.triggers.base import BaseTrigger
from quart import Quart

from quart_sched import APScheduler

JOBS = "/scheduler/jobs"
EXISTING = "existing"
EXISTING_URL = f"{JOBS}/{EXISTING}"


def noop(*args: object, **kwargs: object) -> None:
    """The job function the API may schedule (registered with ``api_function``)."""


def other(*args: object, **kwargs: object) -> None:
    """A second allowed function, for PATCHes that change ``func``."""


def one(x: object) -> None:
    """An allowed function taking exactly one argument, for signature checks."""


NOOP = f"{__name__}:noop"
OTHER = f"{__name__}:other"
#: A body that is accepted: each case below spoils one thing in it.
VALID: dict[str, Any] = {"id": "new", "func": NOOP, "trigger": "interval", "hours": 1}


def body(**changes: Any) -> dict[str, Any]:
    """``VALID`` with ``changes``; a change to ``...`` removes the key."""
    out = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def trigger_body(**fields: Any) -> dict[str, Any]:
    """A valid id and func with exactly these trigger fields."""
    return {"id": "new", "func": NOOP, **fields}


def names(message: str, field: str) -> bool:
    """Whether ``message`` names ``field`` as a word (so ``id`` is not found in ``valid``)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(field)}(?![A-Za-z0-9_])", message) is not None


@pytest.fixture
def app(app: Quart) -> Quart:
    app.config["SCHEDULER_API_ENABLED"] = True
    # Allowed by glob, but no such module: the API must say so with a 400.
    app.config["SCHEDULER_API_ALLOWED_FUNCS"] = ["nonexistent_mod_xyz:*"]
    return app


@pytest.fixture
async def client(app: Quart, serving: APScheduler) -> Any:
    serving.api_function(noop)
    serving.api_function(other)
    serving.api_function(one)
    serving.add_job(EXISTING, noop, trigger="interval", hours=1, args=[1, "a"], kwargs={"k": [2]})
    return app.test_client()


async def jobs_snapshot(client: Any) -> Any:
    response = await client.get(JOBS)
    assert response.status_code == 200
    return await response.get_json()


async def job_snapshot(client: Any, url: str = EXISTING_URL) -> Any:
    response = await client.get(url)
    assert response.status_code == 200
    return await response.get_json()


async def assert_bad_request(response: Any, field: str) -> str:
    """A JSON 400 whose ``error_message`` names ``field``; returns the message."""
    text = await response.get_data(as_text=True)
    assert response.status_code == 400, text
    assert response.mimetype == "application/json", text
    message = json.loads(text)["error_message"]
    assert isinstance(message, str)
    assert names(message, field), f"{field!r} not named in {message!r}"
    return message


# ---------------------------------------------------------------- the body as a whole

RAW_BODIES = [
    pytest.param(b'{"id": "new", ', "JSON", id="truncated"),
    pytest.param(b'{"id": "new"} trailing', "JSON", id="trailing-garbage"),
    pytest.param(b"{'id': 'new'}", "JSON", id="single-quotes"),
    pytest.param('{"id": "n\u00e9w"}'.encode("latin-1"), "UTF-8", id="latin-1"),
    pytest.param(b'{"id": "\xff\xfe"}', "UTF-8", id="invalid-utf-8"),
    pytest.param(b'{"id": "new", "func": "%s", "args": [NaN]}' % NOOP.encode(), "NaN", id="NaN"),
    pytest.param(
        b'{"id": "new", "func": "%s", "trigger": "interval", "seconds": Infinity}' % NOOP.encode(),
        "Infinity",
        id="Infinity",
    ),
    pytest.param(
        b'{"id": "new", "func": "%s", "kwargs": {"x": -Infinity}}' % NOOP.encode(),
        "Infinity",
        id="-Infinity",
    ),
    pytest.param(b"[]", "object", id="list"),
    pytest.param(b'[{"id": "new"}]', "object", id="list-of-object"),
    pytest.param(b'"new"', "object", id="string"),
    pytest.param(b"5", "object", id="number"),
    pytest.param(b"true", "object", id="boolean"),
    pytest.param(b"null", "object", id="null"),
    pytest.param(b"", "object", id="empty"),
    pytest.param(b"  \n", "object", id="whitespace"),
]


@pytest.mark.parametrize("content_type", [None, "application/json"], ids=["no-ctype", "json"])
@pytest.mark.parametrize(("raw", "field"), RAW_BODIES)
async def test_post_bad_body_is_400_and_adds_nothing(
    client: Any, raw: bytes, field: str, content_type: str | None
) -> None:
    before = await jobs_snapshot(client)
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(JOBS, data=raw, headers=headers)
    await assert_bad_request(response, field)
    assert await jobs_snapshot(client) == before


@pytest.mark.parametrize(("raw", "field"), RAW_BODIES)
async def test_patch_bad_body_is_400_and_changes_nothing(
    client: Any, raw: bytes, field: str
) -> None:
    before = await job_snapshot(client)
    response = await client.patch(EXISTING_URL, data=raw)
    await assert_bad_request(response, field)
    assert await job_snapshot(client) == before


# ------------------------------------------------------------------------- POST fields

POST_CASES = [
    # id
    pytest.param(body(id=...), "id", id="id-missing"),
    pytest.param(body(id=5), "id", id="id-number"),
    pytest.param(body(id=None), "id", id="id-null"),
    pytest.param(body(id=["new"]), "id", id="id-list"),
    pytest.param(body(id="a/b"), "id", id="id-slash"),
    pytest.param(body(id=""), "id", id="id-empty"),
    pytest.param(body(id="a\nb"), "id", id="id-control-char"),
    pytest.param(body(id="x" * 201), "id", id="id-too-long"),
    # func
    pytest.param(body(func=...), "func", id="func-missing"),
    pytest.param(body(func=5), "func", id="func-number"),
    pytest.param(body(func=None), "func", id="func-null"),
    pytest.param(body(func={"module": "os"}), "func", id="func-object"),
    pytest.param(body(func="os.system"), "func", id="func-dotted"),
    pytest.param(body(func="noop"), "func", id="func-bare-name"),
    pytest.param(body(func="os:"), "func", id="func-no-function"),
    pytest.param(body(func=":system"), "func", id="func-no-module"),
    pytest.param(body(func="os:system()"), "func", id="func-call"),
    pytest.param(body(func="a b:c"), "func", id="func-space"),
    pytest.param(body(func="os:system:x"), "func", id="func-two-colons"),
    # trigger
    pytest.param(body(trigger="weekly"), "trigger", id="trigger-unknown"),
    pytest.param(body(trigger=5), "trigger", id="trigger-number"),
    pytest.param(body(trigger={"type": 5}), "trigger", id="legacy-type-number"),
    pytest.param(body(trigger={"type": "yearly"}), "trigger", id="legacy-type-unknown"),
    pytest.param(
        body(trigger={"type": "cron", "minute": 5}, minute=6), "minute", id="legacy-twice"
    ),
    # interval arguments
    pytest.param(body(hours=..., minutes="5"), "minutes", id="interval-minutes-string"),
    pytest.param(body(hours=True), "hours", id="interval-hours-bool"),
    pytest.param(body(hours=None), "hours", id="interval-hours-null"),
    pytest.param(body(hours=..., seconds=-1), "seconds", id="interval-seconds-negative"),
    pytest.param(trigger_body(trigger="interval"), "trigger", id="interval-no-length"),
    pytest.param(body(hours=0), "trigger", id="interval-zero"),
    pytest.param(body(hours=0, seconds=0, weeks=0), "trigger", id="interval-all-zero"),
    # faster than SCHEDULER_API_MIN_INTERVAL (1 s by default)
    pytest.param(body(hours=..., seconds=0.000001), "seconds", id="interval-1us"),
    pytest.param(body(hours=..., seconds=1e-300), "seconds", id="interval-1e-300"),
    pytest.param(body(hours=..., minutes=0.001), "minutes", id="interval-minutes-0.001"),
    pytest.param(body(hours=..., minutes=0.001, seconds=0.5), "seconds", id="interval-sum"),
    pytest.param(body(jitter=-1), "jitter", id="interval-jitter-negative"),
    pytest.param(body(jitter="1"), "jitter", id="interval-jitter-string"),
    # cron arguments
    pytest.param(trigger_body(trigger="cron", minute=True), "minute", id="cron-minute-bool"),
    pytest.param(trigger_body(trigger="cron", minute=61), "minute", id="cron-minute-61"),
    pytest.param(trigger_body(trigger="cron", minute=-1), "minute", id="cron-minute-negative"),
    pytest.param(trigger_body(trigger="cron", minute=""), "minute", id="cron-minute-empty"),
    pytest.param(trigger_body(trigger="cron", minute=1.5), "minute", id="cron-minute-float"),
    pytest.param(trigger_body(trigger="cron", minute=[5]), "minute", id="cron-minute-list"),
    pytest.param(trigger_body(trigger="cron", minute="*/0"), "minute", id="cron-step-zero"),
    pytest.param(trigger_body(trigger="cron", hour="25"), "hour", id="cron-hour-25"),
    pytest.param(trigger_body(trigger="cron", hour="a"), "hour", id="cron-hour-word"),
    pytest.param(trigger_body(trigger="cron", day_of_week="funday"), "day_of_week", id="cron-dow"),
    pytest.param(trigger_body(trigger="cron", month=13), "month", id="cron-month-13"),
    pytest.param(trigger_body(trigger="cron", year=10000), "year", id="cron-year"),
    # dates
    pytest.param(
        trigger_body(trigger="date", run_date="tomorrow"), "run_date", id="run_date-word"
    ),
    pytest.param(trigger_body(trigger="date", run_date=5), "run_date", id="run_date-number"),
    pytest.param(
        trigger_body(trigger="date", run_date="2026-02-30T00:00:00"),
        "run_date",
        id="run_date-feb-30",
    ),
    pytest.param(
        trigger_body(trigger="date", run_date="9999-12-31T23:59:59-05:00"),
        "run_date",
        id="run_date-out-of-range",
    ),
    pytest.param(body(start_date="soon"), "start_date", id="start_date-word"),
    pytest.param(body(end_date="later"), "end_date", id="end_date-word"),
    pytest.param(
        body(start_date="2030-01-02T00:00:00+00:00", end_date="2030-01-01T00:00:00+00:00"),
        "end_date",
        id="interval-end-before-start",
    ),
    pytest.param(
        trigger_body(
            trigger="cron",
            minute=5,
            start_date="2030-01-02",
            end_date="2030-01-01T12:00:00",
        ),
        "end_date",
        id="cron-end-before-start",
    ),
    pytest.param(
        trigger_body(trigger="cron", hour=3, start_date="9999-12-31T23:59:59Z"),
        "start_date",
        id="cron-start-9999",
    ),
    pytest.param(
        trigger_body(trigger="cron", hour=3, start_date="9999-12-31T23:59:59Z"),
        "trigger",
        id="cron-start-9999-names-trigger",
    ),
    pytest.param(body(next_run_time="soon"), "next_run_time", id="next_run_time-word"),
    pytest.param(body(next_run_time=5), "next_run_time", id="next_run_time-number"),
    # time zones
    pytest.param(body(timezone="Mars/Olympus"), "timezone", id="tz-unknown"),
    pytest.param(body(timezone=5), "timezone", id="tz-number"),
    pytest.param(body(timezone=""), "timezone", id="tz-empty"),
    pytest.param(body(timezone="../../etc/passwd"), "timezone", id="tz-path"),
    pytest.param(body(timezone="/etc/localtime"), "timezone", id="tz-absolute-path"),
    pytest.param(
        trigger_body(trigger="cron", minute=5, timezone="UTC+99"), "timezone", id="tz-cron"
    ),
    pytest.param(body(trigger=..., hours=..., timezone="UTC"), "timezone", id="tz-no-trigger"),
    # job options
    pytest.param(body(args={"a": 1}), "args", id="args-object"),
    pytest.param(body(args="a b"), "args", id="args-string"),
    pytest.param(body(args=None), "args", id="args-null"),
    pytest.param(body(kwargs=[1, 2]), "kwargs", id="kwargs-list"),
    pytest.param(body(kwargs="k=v"), "kwargs", id="kwargs-string"),
    pytest.param(body(max_instances=0), "max_instances", id="max_instances-0"),
    pytest.param(body(max_instances=-3), "max_instances", id="max_instances-negative"),
    pytest.param(body(max_instances="2"), "max_instances", id="max_instances-string"),
    pytest.param(body(max_instances=1.5), "max_instances", id="max_instances-float"),
    pytest.param(body(max_instances=True), "max_instances", id="max_instances-bool"),
    pytest.param(body(misfire_grace_time="x"), "misfire_grace_time", id="misfire-string"),
    pytest.param(body(misfire_grace_time=0), "misfire_grace_time", id="misfire-0"),
    pytest.param(body(misfire_grace_time=False), "misfire_grace_time", id="misfire-bool"),
    pytest.param(body(coalesce="yes"), "coalesce", id="coalesce-string"),
    pytest.param(body(coalesce=1), "coalesce", id="coalesce-number"),
    pytest.param(body(name=5), "name", id="name-number"),
    # control characters in what reaches a log (a forged log line, ANSI escapes)
    pytest.param(body(name="x\n2026-01-01 CRITICAL forged"), "name", id="name-newline"),
    pytest.param(body(name="\x1b[2J\x1b[31mred"), "name", id="name-ansi"),
    pytest.param(body(name="a\rb"), "name", id="name-cr"),
    pytest.param(body(name="a\x9bb"), "name", id="name-c1-csi"),
    pytest.param(body(func=NOOP + "\n"), "func", id="func-trailing-newline"),
    pytest.param(body(id="a\x1b[0m"), "id", id="id-ansi"),
    pytest.param(trigger_body(trigger="cron", hour="3\n"), "hour", id="cron-hour-newline"),
    pytest.param(body(trigger="interval\n"), "trigger", id="trigger-newline"),
    pytest.param(body(start_date="2030-01-01T00:00:00\n"), "start_date", id="date-newline"),
    pytest.param(body(jobstore="default\n"), "jobstore", id="jobstore-newline"),
    pytest.param(body(executor="\x1b[31m"), "executor", id="executor-ansi"),
    # fields that are not a job's
    pytest.param(body(colour="red"), "colour", id="unknown-field"),
    pytest.param(body(Trigger="cron"), "Trigger", id="unknown-field-case"),
    pytest.param(trigger_body(trigger="date", minute=5), "minute", id="other-triggers-arg"),
    pytest.param(body(jobstore="default"), "jobstore", id="jobstore"),
    pytest.param(body(executor="default"), "executor", id="executor"),
    pytest.param(body(replace_existing=True), "replace_existing", id="replace_existing"),
    pytest.param(
        body(id=EXISTING, replace_existing=True), "replace_existing", id="replace-existing-job"
    ),
]


@pytest.mark.parametrize(("payload", "field"), POST_CASES)
async def test_post_bad_field_is_400_naming_it_and_adds_nothing(
    client: Any, payload: dict[str, Any], field: str
) -> None:
    before = await jobs_snapshot(client)
    response = await client.post(JOBS, json=payload)
    await assert_bad_request(response, field)
    assert await jobs_snapshot(client) == before


async def test_trigger_argument_without_trigger_in_post_says_to_send_the_trigger(
    client: Any,
) -> None:
    before = await jobs_snapshot(client)
    response = await client.post(JOBS, json=body(trigger=..., hours=..., seconds=5))
    message = await assert_bad_request(response, "seconds")
    assert names(message, "trigger")
    assert await jobs_snapshot(client) == before


async def test_valid_body_is_accepted_without_a_content_type(client: Any) -> None:
    """The positive control for the cases above (and curl's habit of no Content-Type)."""
    response = await client.post(JOBS, data=json.dumps(VALID))
    assert response.status_code == 200, await response.get_data(as_text=True)
    job = await response.get_json()
    assert (job["id"], job["func"], job["trigger"], job["hours"]) == ("new", NOOP, "interval", 1)
    assert [j["id"] for j in await jobs_snapshot(client)] == [EXISTING, "new"]


async def test_legacy_trigger_object_is_accepted(client: Any) -> None:
    response = await client.post(
        JOBS, json=trigger_body(trigger={"type": "cron", "minute": 5}, args=[1])
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    job = await response.get_json()
    assert (job["trigger"], job["minute"], job["args"]) == ("cron", "5", [1])
    assert job["next_run_time"] is not None
    assert (await job_snapshot(client, f"{JOBS}/new"))["minute"] == "5"


async def test_allowed_glob_but_unimportable_func_is_400_naming_func(client: Any) -> None:
    before = await jobs_snapshot(client)
    response = await client.post(JOBS, json=body(func="nonexistent_mod_xyz:run"))
    message = await assert_bad_request(response, "func")
    assert "nonexistent_mod_xyz" in message
    assert await jobs_snapshot(client) == before

    before_job = await job_snapshot(client)
    response = await client.patch(EXISTING_URL, json={"func": "nonexistent_mod_xyz:run"})
    await assert_bad_request(response, "func")
    assert await job_snapshot(client) == before_job


async def test_existing_module_but_missing_function_is_400_naming_func(
    app: Quart, client: Any
) -> None:
    app.extensions["apscheduler"].api_function(f"{__name__}:not_defined_here")
    before = await jobs_snapshot(client)
    response = await client.post(JOBS, json=body(func=f"{__name__}:not_defined_here"))
    await assert_bad_request(response, "func")
    assert await jobs_snapshot(client) == before


# ------------------------------------------- arguments that do not fit the function

ARG_MISMATCHES = [
    pytest.param({"args": [1, 2]}, id="too-many-args"),
    pytest.param({"args": [1], "kwargs": {"x": 1}}, id="x-twice"),
    pytest.param({"args": []}, id="missing-arg"),
    pytest.param({"args": [1], "kwargs": {"y": 1}}, id="extra-kwarg"),
]


async def post_and_patch_mismatch(client: Any, changes: dict[str, Any]) -> tuple[Any, Any]:
    """POST a new job and PATCH an existing one with ``changes``; both must be 400 and
    change nothing. Returns the two responses."""
    response = await client.post(JOBS, json=body(id="one", func=f"{__name__}:one", args=[1]))
    assert response.status_code == 200
    before = await jobs_snapshot(client)
    posted = await client.post(JOBS, json=body(func=f"{__name__}:one", **changes))
    assert posted.status_code == 400
    assert await jobs_snapshot(client) == before
    patched = await client.patch(f"{JOBS}/one", json=changes)
    assert patched.status_code == 400
    assert await jobs_snapshot(client) == before
    return posted, patched


@pytest.mark.parametrize("changes", ARG_MISMATCHES)
async def test_arguments_that_do_not_fit_the_function_are_400(
    client: Any, changes: dict[str, Any]
) -> None:
    await post_and_patch_mismatch(client, changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"args": [1, 2]}, "args", id="too-many-args"),
        pytest.param({"args": [1], "kwargs": {"x": 1}}, "args", id="x-twice"),
        pytest.param({"args": []}, "args", id="missing-arg"),
        pytest.param({"args": [1], "kwargs": {"y": 1}}, "kwargs", id="extra-kwarg"),
    ],
)
async def test_arguments_that_do_not_fit_the_function_are_named(
    client: Any, changes: dict[str, Any], field: str
) -> None:
    for response in await post_and_patch_mismatch(client, changes):
        await assert_bad_request(response, field)


# ------------------------------------------------------ values that overflow Python's types

OVERFLOW_CASES = [
    pytest.param(
        json.dumps(body(hours=..., weeks=1e12)).encode(),
        "weeks",
        id="interval-weeks-1e12",
    ),
    pytest.param(
        json.dumps(body(hours=..., days=10**10)).encode(),
        "days",
        id="interval-days-1e10",
    ),
    pytest.param(
        json.dumps(body(hours=..., seconds=10**400)).encode(),
        "seconds",
        id="interval-seconds-10e400",
    ),
    pytest.param(
        json.dumps(body(jitter=10**400)).encode(),
        "jitter",
        id="jitter-10e400",
    ),
    pytest.param(
        json.dumps(body(misfire_grace_time=10**30)).encode(),
        "misfire_grace_time",
        id="misfire-10e30",
    ),
    pytest.param(
        b'{"id": "new", "func": "%s", "args": [1e400]}' % NOOP.encode(),
        "args",
        id="args-1e400",
    ),
    pytest.param(
        b'{"id": "new", "func": "%s", "args": %s}' % (NOOP.encode(), b"[" * 5000 + b"]" * 5000),
        "JSON",
        id="nested-5000",
    ),
]


@pytest.mark.parametrize(("raw", "field"), OVERFLOW_CASES)
async def test_numbers_python_cannot_hold_and_deep_nesting_are_400(
    client: Any, raw: bytes, field: str
) -> None:
    before = await jobs_snapshot(client)
    response = await client.post(JOBS, data=raw)
    await assert_bad_request(response, field)
    assert await jobs_snapshot(client) == before


# ------------------------------------------------------------------------ PATCH fields

PATCH_CASES = [
    pytest.param({"id": "other"}, "id", id="id-differs-from-url"),
    pytest.param({"id": 5}, "id", id="id-number"),
    pytest.param({"func": 5}, "func", id="func-number"),
    pytest.param({"func": "os.system"}, "func", id="func-dotted"),
    pytest.param({"func": None}, "func", id="func-null"),
    pytest.param({"name": ["x"]}, "name", id="name-list"),
    pytest.param({"args": {"a": 1}}, "args", id="args-object"),
    pytest.param({"args": "1"}, "args", id="args-string"),
    pytest.param({"kwargs": [1]}, "kwargs", id="kwargs-list"),
    pytest.param({"max_instances": 0}, "max_instances", id="max_instances-0"),
    pytest.param({"misfire_grace_time": "x"}, "misfire_grace_time", id="misfire-string"),
    pytest.param({"coalesce": "yes"}, "coalesce", id="coalesce-string"),
    pytest.param({"next_run_time": "tomorrow"}, "next_run_time", id="next_run_time-word"),
    pytest.param({"trigger": "weekly"}, "trigger", id="trigger-unknown"),
    pytest.param({"trigger": "interval", "minutes": "5"}, "minutes", id="interval-string"),
    pytest.param({"trigger": "interval", "seconds": -1}, "seconds", id="interval-negative"),
    pytest.param({"trigger": "interval"}, "trigger", id="interval-no-length"),
    pytest.param({"trigger": "interval", "seconds": 0}, "trigger", id="interval-zero"),
    pytest.param({"trigger": "cron", "minute": True}, "minute", id="cron-minute-bool"),
    pytest.param({"trigger": "cron", "minute": 61}, "minute", id="cron-minute-61"),
    pytest.param({"trigger": "date", "run_date": "tomorrow"}, "run_date", id="run_date-word"),
    pytest.param(
        {
            "trigger": "interval",
            "hours": 1,
            "start_date": "2030-01-02T00:00:00+00:00",
            "end_date": "2030-01-01T00:00:00+00:00",
        },
        "end_date",
        id="end-before-start",
    ),
    pytest.param(
        {"trigger": "cron", "minute": 5, "timezone": "Nowhere/Land"}, "timezone", id="tz"
    ),
    pytest.param({"trigger": {"type": "cron", "minute": 61}}, "minute", id="legacy-minute-61"),
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"jobstore": "default"}, "jobstore", id="jobstore"),
    pytest.param({"executor": "default"}, "executor", id="executor"),
    pytest.param({"replace_existing": True}, "replace_existing", id="replace_existing"),
    pytest.param({"args": [9], "jobstore": "x"}, "jobstore", id="valid-plus-jobstore"),
    pytest.param({"args": [9], "name": "ok\nforged"}, "name", id="valid-plus-name-newline"),
    pytest.param({"trigger": "interval", "seconds": 1e-300}, "seconds", id="interval-1e-300"),
    pytest.param(
        {"trigger": "cron", "hour": 3, "start_date": "9999-12-31T23:59:59Z"},
        "start_date",
        id="cron-start-9999",
    ),
    pytest.param({"func": OTHER + "\n"}, "func", id="func-trailing-newline"),
    pytest.param({"trigger": {"type": "cron", "minute": "5\r"}}, "minute", id="legacy-minute-cr"),
    pytest.param(
        {"args": [9], "trigger": "cron", "minute": 99}, "minute", id="valid-plus-bad-trigger"
    ),
]


@pytest.mark.parametrize(("payload", "field"), PATCH_CASES)
async def test_patch_bad_field_is_400_naming_it_and_changes_nothing(
    client: Any, payload: dict[str, Any], field: str
) -> None:
    before = await job_snapshot(client)
    response = await client.patch(EXISTING_URL, json=payload)
    await assert_bad_request(response, field)
    assert await job_snapshot(client) == before


@pytest.mark.parametrize(
    "payload",
    [
        {"seconds": 5},
        {"minute": 5},
        {"run_date": "2030-01-01T00:00:00+00:00"},
        {"start_date": "2030-01-01T00:00:00+00:00"},
        {"timezone": "UTC"},
        {"jitter": 3},
        {"args": [2], "hours": 2},
    ],
    ids=lambda p: "+".join(p),
)
async def test_patch_trigger_argument_without_trigger_says_to_send_the_trigger(
    client: Any, payload: dict[str, Any]
) -> None:
    field = next(key for key in payload if key != "args")
    before = await job_snapshot(client)
    response = await client.patch(EXISTING_URL, json=payload)
    message = await assert_bad_request(response, field)
    assert names(message, "trigger"), message
    assert "send" in message.lower(), message
    assert await job_snapshot(client) == before


async def test_patch_with_valid_changes_is_applied(client: Any) -> None:
    """The positive control of the PATCH cases: id equal to the URL's, legacy trigger."""
    response = await client.patch(
        EXISTING_URL,
        json={"id": EXISTING, "args": [3], "trigger": {"type": "cron", "minute": 5}},
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    job = await job_snapshot(client)
    assert (job["args"], job["trigger"], job["minute"]) == ([3], "cron", "5")
    assert job["kwargs"] == {"k": [2]}


async def test_patch_unknown_job_is_404(client: Any) -> None:
    response = await client.patch(f"{JOBS}/nope", json={"args": [1]})
    assert response.status_code == 404
    assert "nope" in (await response.get_json())["error_message"]


# ------------------------------------------------------------------------------ shutdown


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b'{"wait": "no"}', "wait", id="wait-string"),
        pytest.param(b'{"wait": 0}', "wait", id="wait-number"),
        pytest.param(b'{"wait": null}', "wait", id="wait-null"),
        pytest.param(b'{"wait": false, "now": true}', "now", id="unknown-field"),
        pytest.param(b"[false]", "object", id="list"),
        pytest.param(b'{"wait": ', "JSON", id="malformed"),
    ],
)
async def test_shutdown_with_bad_body_is_400_and_keeps_running(
    client: Any, serving: APScheduler, raw: bytes, field: str
) -> None:
    response = await client.post("/scheduler/shutdown", data=raw)
    await assert_bad_request(response, field)
    assert serving.running
    info = await (await client.get("/scheduler")).get_json()
    assert info["running"] is True


async def test_a_date_job_already_past_its_grace_time_is_refused(client: Any) -> None:
    before = await jobs_snapshot(client)
    past = body(id="late", trigger="date", hours=..., run_date="2000-01-01T00:00:00+00:00")
    for extra in ({}, {"misfire_grace_time": 60}):
        response = await client.post(JOBS, json={**past, **extra})
        message = await assert_bad_request(response, "run_date")
        assert "missed" in message
    assert await jobs_snapshot(client) == before
    # No grace limit: it runs however late, so it is accepted.
    response = await client.post(JOBS, json={**past, "misfire_grace_time": None})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("field", "trigger"), [("hour", "cron"), ("seconds", "interval"), ("run_date", "date")]
)
async def test_a_trigger_argument_alone_names_its_trigger(
    client: Any, field: str, trigger: str
) -> None:
    response = await client.patch(EXISTING_URL, json={field: 4})
    message = await assert_bad_request(response, field)
    assert f'"trigger": "{trigger}"' in message


# ------------------------------------------------------------ SCHEDULER_API_MIN_INTERVAL


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"trigger": "cron", "second": "*"}, "second", id="cron-every-second"),
        pytest.param({"trigger": "cron", "second": "*/30"}, "second", id="cron-every-30s"),
        pytest.param({"trigger": "cron", "minute": "*"}, "minute", id="cron-every-minute"),
        pytest.param({"trigger": "cron", "second": "0,1", "minute": 0}, "second", id="cron-burst"),
        pytest.param({"trigger": "interval", "minutes": 1}, "minutes", id="interval-1-minute"),
    ],
)
async def test_a_trigger_faster_than_the_floor_is_400_on_post_and_patch(
    app: Quart, fields: dict[str, Any], field: str
) -> None:
    app.config["SCHEDULER_API_MIN_INTERVAL"] = 120
    ext = APScheduler(app=app)
    ext.api_function(noop)
    ext.add_job(EXISTING, noop, trigger="interval", hours=1)
    ext.start()
    async with app.test_app():
        client = app.test_client()
        before = await jobs_snapshot(client)
        await assert_bad_request(await client.post(JOBS, json=trigger_body(**fields)), field)
        message = await assert_bad_request(await client.patch(EXISTING_URL, json=fields), field)
        assert "SCHEDULER_API_MIN_INTERVAL" in message
        assert await jobs_snapshot(client) == before
        # At the floor is fine.
        at_floor = {
            "cron": {"trigger": "cron", "minute": "*/2"},
            "interval": {"trigger": "interval", "minutes": 2},
        }[fields["trigger"]]
        response = await client.post(JOBS, json=trigger_body(**at_floor))
        assert response.status_code == 200, await response.get_data(as_text=True)


async def test_a_zero_floor_lets_the_api_add_fast_triggers(app: Quart) -> None:
    app.config["SCHEDULER_API_MIN_INTERVAL"] = 0
    ext = APScheduler(app=app)
    ext.api_function(noop)
    async with app.test_app():
        response = await app.test_client().post(
            JOBS, json=trigger_body(trigger="interval", seconds=0.5)
        )
        assert response.status_code == 200, await response.get_data(as_text=True)


class _BrokenAfterFirstFire(BaseTrigger):
    """A user's trigger whose later fire times cannot be computed."""

    def get_next_fire_time(self, previous: Any, now: Any) -> Any:
        if previous is not None:
            raise IndexError("list index out of range")
        return now + timedelta(hours=1)


async def test_next_run_times_of_a_trigger_that_raises_is_never_a_500(client: Any) -> None:
    ext = client.app.extensions["apscheduler"]
    ext.add_job("odd", noop, trigger=_BrokenAfterFirstFire())
    response = await client.get(f"{JOBS}/odd/next_run_times?n=3")
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert len((await response.get_json())["next_run_times"]) == 1
