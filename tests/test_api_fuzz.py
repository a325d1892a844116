"""Whatever a client sends to a write route, the API answers as its document says.

Hypothesis throws arbitrary JSON, job-shaped bodies with hostile values (huge and negative
numbers, 1e308, NaN, lone surrogates, empty strings, legacy trigger dicts) and raw bytes at
``POST /jobs``, ``PATCH /jobs/<id>``, ``POST /shutdown``, ``POST /jobs/<id>/run`` and
``GET /jobs/<id>/next_run_times``. The properties:

- never a 500 (but for the bugs already reported, listed in :data:`KNOWN_500S` and each
  pinned by an ``xfail`` test at the end of this file);
- every response has a status the OpenAPI document lists for its route and a body matching
  the referenced schema, so every error is JSON with an ``error_message``;
- a 4xx changes nothing: ``GET /jobs`` (less ``running_instances``) is the same after;
- a body the API accepts is one the document allows.

The scheduler runs paused so no job fires between two reads of the store. Examples are
derandomized (the same every run); set ``QUART_SCHED_FUZZ_RANDOM=1`` to explore.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from quart import Quart
from quart.signals import got_request_exception
from test_api_openapi import Contract, fetch_contract

from quart_sched import APScheduler
from quart_sched._json import CRON_FIELDS, INTERVAL_UNITS

from support import wait_until

FUNC = f"{__name__}:noop"
SYNC_FUNC = f"{__name__}:sync_noop"
NOT_CALLABLE = "a module-level string, not a function"
FUTURE = "2099-01-01T09:30:00+00:00"

FUZZ = settings(
    deadline=None,
    derandomize=not os.environ.get("QUART_SCHED_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def noop(*args: Any, **kwargs: Any) -> None:
    """What the fuzzed jobs run: takes anything, does nothing."""


def sync_noop(*args: Any, **kwargs: Any) -> None:
    """The same as a plain function (runs in the thread pool)."""


# ----------------------------------------------------------------- known bugs (500s)

#: 500s already reported; each is pinned by an xfail test at the end of this file. The
#: fuzz tolerates them (and resets the store) so it keeps finding new ones. Remove an entry
#: when its xfail test starts passing.
KNOWN_500S: dict[str, Callable[[BaseException], bool]] = {}


# ------------------------------------------------------------------------ the harness


def _without_running_instances(jobs: Any) -> Any:
    return sorted(
        (
            {k: v for k, v in job.items() if k not in ("running_instances", "last_run")}
            for job in jobs
        ),
        key=lambda job: job["id"],
    )


class Harness:
    """One app, serving with its scheduler paused, and the checks every exchange gets."""

    def __init__(
        self,
        app: Quart,
        ext: APScheduler,
        contract: Contract,
        baseline: Callable[[APScheduler], None],
    ) -> None:
        self.app = app
        self.ext = ext
        self.contract = contract
        self.baseline = baseline
        self.errors: list[BaseException] = []

    def __repr__(self) -> str:  # Hypothesis prints it with each failing example
        return f"Harness({self.baseline.__name__})"

    async def snapshot(self) -> Any:
        response = await self.app.test_client().get("/scheduler/jobs")
        assert response.status_code == 200, "GET /jobs failed: the store is unreadable"
        return _without_running_instances(json.loads(await response.get_data(as_text=False)))

    async def send(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        content_type: str | None = None,
        query: bytes = b"",
    ) -> tuple[int, Any]:
        """Send a request; check it against the document; return (status, JSON or None).

        A known 500 returns (500, None) after restoring the store to its baseline.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        url = "/scheduler" + path
        self.errors.clear()
        response = await self.app.test_client().open(
            url + ("?" + query.decode("ascii") if query else ""),
            method=method,
            data=data,
            headers=headers,
        )
        raw = await response.get_data(as_text=False)
        if response.status_code == 500 and self.errors:
            names = [n for n, match in KNOWN_500S.items() if match(self.errors[0])]
            if names:
                event(f"tolerated known bug: {', '.join(names)}")
                self.reset()
                return 500, None
        assert response.status_code != 500, (
            f"500 for {method} {url}?{query!r} with body {data!r}: {self.errors!r}"
        )
        value = self.contract.check_response(
            method, url, response.status_code, response.mimetype or "", raw
        )
        if response.status_code >= 400:
            assert isinstance(value, dict) and isinstance(value.get("error_message"), str)
        return response.status_code, value

    def reset(self) -> None:
        """Put the store back as the test started (after a known bug left it changed)."""
        self.ext.remove_all_jobs()
        self.baseline(self.ext)


@asynccontextmanager
async def _harness(app: Quart, baseline: Callable[[APScheduler], None]) -> AsyncIterator[Harness]:
    app.config["SCHEDULER_API_ENABLED"] = True
    app.config["SCHEDULER_API_ALLOWED_FUNCS"] = [f"{__name__}:*"]
    app.config["SCHEDULER_TIMEZONE"] = "UTC"
    ext = APScheduler(app=app)
    async with app.test_app():
        ext.start(paused=True)  # no job fires between two reads of the store
        baseline(ext)
        harness = Harness(app, ext, await fetch_contract(app), baseline)

        def record(sender: Any, exception: BaseException, **extra: Any) -> None:
            harness.errors.append(exception)

        got_request_exception.connect(record, app)
        try:
            yield harness
        finally:
            got_request_exception.disconnect(record, app)


def _existing_job(ext: APScheduler) -> None:
    ext.add_job("existing", FUNC, trigger="date", run_date=FUTURE)  # for 409s


def _one_target(ext: APScheduler) -> None:
    ext.add_job("target", FUNC, trigger="interval", hours=1, start_date=FUTURE)


def _cron_target(ext: APScheduler) -> None:
    ext.add_job("target", FUNC, trigger="cron", minute="*/5", max_instances=3)


# -------------------------------------------------------------------------- strategies

_any_text = st.text(st.characters(exclude_categories=[]), max_size=12)  # lone surrogates too
_texts = st.one_of(
    st.text(max_size=12), _any_text, st.sampled_from(["", " ", "\x00", "é", "\ud800", "x" * 300])
)
_huge = st.sampled_from(
    [0, -1, 1, 59, 60, 2**31, 2**63, 10**18, 10**30, -(10**30), 10**308, 10**4000]
)
_special_floats = st.sampled_from(
    [1e308, -1e308, 5e-324, 0.0, -0.0, 0.5, 1e-7, 1e15, 1.0, math.inf, -math.inf, math.nan]
)
_numbers = st.one_of(st.integers(), _huge, st.floats(), _special_floats)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _texts)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_texts, children, max_size=4)
    ),
    max_leaves=10,
)
_plain_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_plain_json = st.recursive(
    _plain_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)

_valid_dates = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
).map(lambda d: d.isoformat())
_dates = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ") + "Z"),
    st.dates().map(str),
    st.sampled_from(
        [
            "9999-12-31T23:59:59+00:00",
            "9999-12-31T23:59:59-12:00",
            "0001-01-01T00:00:00+14:00",
            "2030-02-30",
            "2030-01-01T25:00:00",
            "now",
            "",
        ]
    ),
    _texts,
)
_valid_zones = st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"])
_zones = st.one_of(
    st.sampled_from(["Etc/GMT+12", "localtime", "Mars/Base", "../x", "", "utc", "Europe"]),
    _texts,
)
_valid_cron = st.one_of(
    st.sampled_from(["*", "*/5", "1", "1-3", "1,2", "mon-fri"]), st.integers(0, 7)
)
_cron_values = st.one_of(
    st.sampled_from(["last", "last fri", "60", "*/0", "5-1", "x", "", "2nd mon"]),
    st.integers(-2, 10000),
    _huge,
    _texts,
)
_valid_amounts = st.integers(0, 1000) | st.floats(0, 1000)
_amounts = st.one_of(_huge, _special_floats, st.floats(), st.integers(), _texts)
_ids = st.one_of(
    st.sampled_from(["existing", "target", "a/b", "x" * 201, "", ".", "tab\there"]), _any_text
)
_funcs = st.one_of(
    st.sampled_from(
        [
            f"{__name__}:missing",
            f"{__name__}:NOT_CALLABLE",
            f"{__name__}:noop.attr",
            "os:system",
            "jobfuncs:tick",
            "no reference",
            "a:b:c",
            "",
        ]
    ),
    _texts,
)

#: key -> (a valid value, a hostile one); see _value for how often each is drawn.
_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "id": (st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.é ", min_size=2, max_size=8), _ids),
    "name": (st.text(max_size=10), _texts),
    "func": (st.sampled_from([FUNC, SYNC_FUNC]), _funcs),
    "args": (st.lists(_plain_json, max_size=3), st.lists(_json, max_size=3)),
    "kwargs": (
        st.dictionaries(st.text(max_size=5), _plain_json, max_size=3),
        st.dictionaries(_texts, _json, max_size=3),
    ),
    "trigger": (
        st.sampled_from(["date", "interval", "cron"]),
        st.sampled_from(["weekly", "", "DATE", None]),
    ),
    "misfire_grace_time": (st.none() | st.integers(1, 3600), st.integers(-5, 0) | _huge),
    "max_instances": (st.integers(1, 10), st.integers(-5, 0) | _huge),
    "coalesce": (st.booleans(), _scalars),
    "next_run_time": (st.none() | _valid_dates, _dates),
    "run_date": (_valid_dates, st.none() | _dates),
    "start_date": (st.none() | _valid_dates, _dates),
    "end_date": (st.none() | _valid_dates, _dates),
    "timezone": (st.none() | _valid_zones, _zones),
    "jitter": (st.none() | _valid_amounts, _amounts),
    **{unit: (_valid_amounts, _amounts) for unit in INTERVAL_UNITS},
    **{name: (_valid_cron, _cron_values) for name in CRON_FIELDS},
    "jobstore": (st.just("default"), _json),
    "executor": (st.just("default"), _json),
    "replace_existing": (st.booleans(), _json),
}
_KEYS = sorted(_FIELDS)


@st.composite
def _value(draw: st.DrawFn, key: str) -> Any:
    """Mostly a valid value for ``key``; sometimes a hostile one, or any JSON."""
    valid, hostile = _FIELDS.get(key, (_json, _json))
    roll = draw(st.integers(0, 11))  # Hypothesis favours the bounds: keep them valid
    return draw(hostile if roll in (4, 5) else _json if roll == 6 else valid)


@st.composite
def _trigger_fields(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["date", "interval", "interval", "cron", "cron", "none", "legacy"])
    )
    fields: dict[str, Any] = {}
    if kind == "date":
        fields = {"trigger": "date", "run_date": draw(_value("run_date"))}
    elif kind == "interval":
        units = draw(
            st.lists(st.sampled_from(INTERVAL_UNITS), min_size=1, max_size=3, unique=True)
        )
        fields = {"trigger": "interval", **{u: draw(_value(u)) for u in units}}
    elif kind == "cron":
        names = draw(st.lists(st.sampled_from(CRON_FIELDS), min_size=1, max_size=2, unique=True))
        fields = {"trigger": "cron", **{n: draw(_value(n)) for n in names}}
    elif kind == "legacy":  # Flask-APScheduler's {"trigger": {"type": "cron", ...}}
        inner = draw(_trigger_fields())
        legacy = {k: v for k, v in inner.items() if k != "trigger"}
        if "trigger" in inner and draw(st.booleans()):
            legacy["type"] = inner["trigger"]
        fields = {"trigger": legacy}
    extras = ["timezone"] if kind == "date" else ["start_date", "end_date", "timezone", "jitter"]
    for key in draw(st.lists(st.sampled_from(extras), max_size=2, unique=True)):
        fields[key] = draw(_value(key))
    return fields


@st.composite
def job_bodies(draw: st.DrawFn, *, partial: bool = False) -> dict[str, Any]:
    """A job definition, often valid, with a few more fields of any name and value."""
    body: dict[str, Any] = {}
    for key in ("id", "func", "name", "args", "kwargs"):
        required = key in ("id", "func") and not partial
        if required or draw(st.booleans()):
            body[key] = draw(_value(key))
    if partial and "id" in body and draw(st.booleans()):
        body["id"] = "target"  # the URL's: allowed in a PATCH
    body.update(draw(_trigger_fields()))
    keys = st.sampled_from(_KEYS) | _texts
    for key in draw(st.lists(keys, max_size=2, unique=True)):
        body[key] = draw(_value(key))
    if body and draw(st.integers(0, 9)) == 5:
        del body[draw(st.sampled_from(sorted(body)))]
    return body


_raw_bodies = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{",
            b"[]",
            b"null",
            b"0",
            b'"\\ud800"',
            b"\xef\xbb\xbf{}",
            b"{}\x00",
            b"1e999",
            b"-Infinity",
            b'{"id": "x", "id": "y", "func": "a:b"}',
            "{}".encode("utf-16"),
            b"[" * 50 + b"]" * 50,
        ]
    ),
)
_content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json; charset=latin-1",
    ]
)


@st.composite
def payloads(draw: st.DrawFn, bodies: st.SearchStrategy[Any]) -> tuple[Any, bytes]:
    """(the body as Python, or None for raw bytes; the bytes sent)."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        raw = draw(_raw_bodies)
        return None, raw
    body = draw(bodies) if choice > 1 else draw(_json)
    return body, json.dumps(body, ensure_ascii=draw(st.booleans())).encode(
        "utf-8", "surrogatepass"
    )


def _documented_gap(body: Any) -> bool:
    """A body the API accepts but the document forbids: reported, and pinned by an xfail test
    in test_api_openapi. Remove a case when its xfail test starts passing."""
    return False


# ------------------------------------------------------------------------------ tests


@pytest.fixture
async def add_route(app: Quart) -> AsyncIterator[Harness]:
    async with _harness(app, _existing_job) as harness:
        yield harness


@settings(FUZZ, max_examples=300)
@given(payload=payloads(job_bodies()), content_type=_content_types)
async def test_post_jobs_never_fails_and_a_refusal_changes_nothing(
    add_route: Harness, payload: tuple[Any, bytes], content_type: str | None
) -> None:
    body, data = payload
    add_route.reset()
    before = await add_route.snapshot()
    status, reply = await add_route.send("POST", "/jobs", data, content_type)
    event(f"POST /jobs -> {status}")
    if status == 500:
        return  # a known bug; the store was reset
    if 400 <= status < 500:
        assert await add_route.snapshot() == before, f"{status} but the store changed"
        return
    assert status == 200
    assert isinstance(body, dict) and reply["id"] == body["id"]
    if not _documented_gap(body):
        add_route.contract.check_request("POST", "/scheduler/jobs", body)
    add_route.ext.remove_job(reply["id"])
    assert await add_route.snapshot() == before


@pytest.fixture
async def patch_route(app: Quart) -> AsyncIterator[Harness]:
    async with _harness(app, _one_target) as harness:
        yield harness


@settings(FUZZ, max_examples=200)
@given(payload=payloads(job_bodies(partial=True)), content_type=_content_types)
async def test_patch_job_never_fails_and_a_refusal_changes_nothing(
    patch_route: Harness, payload: tuple[Any, bytes], content_type: str | None
) -> None:
    body, data = payload
    patch_route.reset()
    before = await patch_route.snapshot()
    status, reply = await patch_route.send("PATCH", "/jobs/target", data, content_type)
    event(f"PATCH /jobs/target -> {status}")
    if status == 500:
        return
    if 400 <= status < 500:
        assert await patch_route.snapshot() == before, f"{status} but the store changed"
        return
    assert status == 200 and reply["id"] == "target"
    if not _documented_gap(body):
        patch_route.contract.check_request("PATCH", "/scheduler/jobs/target", body)
    assert _without_running_instances([reply]) == await patch_route.snapshot()


@pytest.fixture
async def shutdown_route(app: Quart) -> AsyncIterator[Harness]:
    async with _harness(app, _one_target) as harness:
        yield harness


_shutdown_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"wait": _json}),
    st.fixed_dictionaries({"wait": st.booleans()}),
    st.dictionaries(_texts, _json, max_size=2),
)


@settings(FUZZ, max_examples=100)
@given(payload=payloads(_shutdown_bodies), content_type=_content_types)
async def test_post_shutdown_never_fails_and_a_refusal_changes_nothing(
    shutdown_route: Harness, payload: tuple[Any, bytes], content_type: str | None
) -> None:
    body, data = payload
    shutdown_route.reset()
    before = await shutdown_route.snapshot()
    status, _reply = await shutdown_route.send("POST", "/shutdown", data, content_type)
    event(f"POST /shutdown -> {status}")
    if 400 <= status < 500:
        assert shutdown_route.ext.running
        assert await shutdown_route.snapshot() == before
        return
    assert status == 204
    assert not shutdown_route.ext.running
    if body is not None:  # raw bytes, or JSON null: a gap pinned in test_api_openapi
        shutdown_route.contract.check_request("POST", "/scheduler/shutdown", body)
    # Start again, paused as before; the in-memory jobs are kept.
    assert (await shutdown_route.send("POST", "/start"))[0] == 204
    assert (await shutdown_route.send("POST", "/pause"))[0] == 204
    assert await shutdown_route.snapshot() == before


@pytest.fixture
async def read_routes(app: Quart) -> AsyncIterator[Harness]:
    async with _harness(app, _cron_target) as harness:
        yield harness


_query_values = st.one_of(
    st.text(max_size=8).map(lambda text: quote(text, safe="").encode()),
    st.binary(max_size=8).map(lambda raw: quote(raw, safe="").encode()),
    st.integers(-5, 200).map(lambda n: str(n).encode()),
    st.sampled_from([b"", b"false", b"FALSE", b"0", b"no", b"true", b"1" * 5000, b"%C2%B2"]),
)
_path_ids = st.one_of(
    st.just("target"),
    st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s and s not in (".", "..")),
)


@settings(FUZZ, max_examples=100)
@given(job_id=_path_ids, wait=_query_values, with_param=st.booleans())
async def test_run_job_never_fails_and_changes_nothing(
    read_routes: Harness, job_id: str, wait: bytes, with_param: bool
) -> None:
    before = await read_routes.snapshot()
    query = b"wait=" + wait if with_param else b""
    path = f"/jobs/{quote(job_id, safe='')}/run"
    status, _reply = await read_routes.send("POST", path, query=query)
    event(f"POST /run -> {status}")
    assert status in (200, 202, 404, 409), status
    if status == 404:
        assert job_id != "target"
    assert await read_routes.snapshot() == before
    await wait_until(lambda: read_routes.ext.scheduler.running_instances("target") == 0)


@settings(FUZZ, max_examples=150)
@given(job_id=_path_ids, n=_query_values, with_param=st.booleans())
async def test_next_run_times_never_fails(
    read_routes: Harness, job_id: str, n: bytes, with_param: bool
) -> None:
    query = b"n=" + n if with_param else b""
    path = f"/jobs/{quote(job_id, safe='')}/next_run_times"
    status, reply = await read_routes.send("GET", path, query=query)
    event(f"GET /next_run_times -> {status}")
    if status == 200:
        expected = int(unquote(n.decode())) if with_param else 5
        assert 1 <= expected <= 100 and len(reply["next_run_times"]) == expected
        assert job_id == "target"
    else:
        assert status in (400, 404, 500), status


# ---------------------------------------------- 500s the fuzz found, now fixed: regressions


def _bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(
        strict=True, raises=AssertionError, reason=f"quart_sched bug: {reason}"
    )


@pytest.fixture
async def api(app: Quart) -> AsyncIterator[Harness]:
    async with _harness(app, _one_target) as harness:
        yield harness


async def _send_json(harness: Harness, method: str, path: str, body: Any) -> int:
    harness.errors.clear()
    response = await harness.app.test_client().open(
        "/scheduler" + path, method=method, data=json.dumps(body).encode()
    )
    assert response.status_code != 500, f"500: {harness.errors!r}"
    return response.status_code


@pytest.mark.parametrize(("method", "path"), [("POST", "/jobs"), ("PATCH", "/jobs/target")])
@pytest.mark.parametrize("seconds", [1e308, 10**30])
async def test_an_interval_too_long_for_python_is_a_400(
    api: Harness, method: str, path: str, seconds: float
) -> None:
    body = {"id": "target", "func": FUNC, "trigger": "interval", "seconds": seconds}
    assert await _send_json(api, method, path, body) == 400


@pytest.mark.parametrize(
    "fields", [{"days": 3_000_000}, {"seconds": 1, "jitter": 1e308}], ids=["days", "jitter"]
)
async def test_an_interval_reaching_past_year_9999_is_a_400(
    api: Harness, fields: dict[str, Any]
) -> None:
    body = {"id": "far", "func": FUNC, "trigger": "interval", **fields}
    assert await _send_json(api, "POST", "/jobs", body) == 400


async def test_deeply_nested_json_is_a_400(api: Harness) -> None:
    response = await api.app.test_client().post("/scheduler/jobs", data=b"[" * 100_000)
    assert response.status_code == 400


# ------------------------------------------------- open bugs the fuzz found, as xfails


async def test_a_lone_surrogate_in_a_job_never_breaks_the_api(api: Harness) -> None:
    body = {"id": "s", "func": FUNC, "name": "\ud800", "trigger": "date", "run_date": FUTURE}
    status = await _send_json(api, "POST", "/jobs", body)
    assert status in (200, 400)
    assert (await api.app.test_client().get("/scheduler/jobs")).status_code == 200


async def test_a_lone_surrogate_in_an_error_message_is_a_400(api: Harness) -> None:
    body = {"id": "s", "func": FUNC, "trigger": "cron", "minute": "\ud800"}
    assert await _send_json(api, "POST", "/jobs", body) == 400


@pytest.mark.parametrize("n", ["%C2%B2", "1" * 4301], ids=["superscript", "4301-digits"])
async def test_a_bad_n_is_a_400(api: Harness, n: str) -> None:
    response = await api.app.test_client().get(f"/scheduler/jobs/target/next_run_times?n={n}")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "trigger",
    [
        {"trigger": "interval", "seconds": 10, "start_date": "9999-12-31T23:59:50+00:00"},
        {
            "trigger": "cron",
            "year": 9999,
            "month": 12,
            "day": 31,
            "hour": 23,
            "minute": 59,
            "second": 59,
        },
    ],
    ids=["interval", "cron"],
)
async def test_next_run_times_near_year_9999_is_not_a_500(
    api: Harness, trigger: dict[str, Any]
) -> None:
    assert await _send_json(api, "PATCH", "/jobs/target", trigger) == 200
    response = await api.app.test_client().get("/scheduler/jobs/target/next_run_times?n=3")
    assert response.status_code == 200


@pytest.mark.parametrize("zone", ["Europe", "x" * 256], ids=["directory", "too-long"])
async def test_a_timezone_that_is_not_a_zone_file_is_a_400(api: Harness, zone: str) -> None:
    body = {"id": "z", "func": FUNC, "trigger": "date", "run_date": FUTURE, "timezone": zone}
    assert await _send_json(api, "POST", "/jobs", body) == 400
