"""The REST API's security model: allowlist, auth on every route, cross-site writes,
no secrets in logs, races, and job-store I/O kept off the serving loop."""

from __future__ import annotations

import asyncio
import base64
import logging
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_sched import STATE_RUNNING, APScheduler
from quart_sched.auth import HTTPBasicAuth, HTTPBearerAuth, compare_digest
from quart_sched.errors import ConfigurationError

from support import wait_until

API = "/scheduler"
JOBS = f"{API}/jobs"
EXISTING = "existing"
EXISTING_URL = f"{JOBS}/{EXISTING}"
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
ME = __name__  # "test_api_security": the tests folder is on sys.path

#: Runs of the module-level job functions below, by job function name.
RUNS: list[str] = []


def noop(*args: object, **kwargs: object) -> None:
    RUNS.append("noop")


def other(*args: object, **kwargs: object) -> None:
    RUNS.append("other")


def from_code(*args: object, **kwargs: object) -> None:
    RUNS.append("from_code")


def from_config(*args: object, **kwargs: object) -> None:
    RUNS.append("from_config")


def failing(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the job failed on purpose")


async def stored_job(*args: object, **kwargs: object) -> None:
    RUNS.append("stored_job")


def make_ext(app: Quart, **config: Any) -> APScheduler:
    """The extension on ``app`` with the API enabled and ``config`` applied."""
    app.config["SCHEDULER_API_ENABLED"] = True
    app.config.update(config)
    ext = APScheduler(app=app)
    ext.api_function(noop)
    return ext


@asynccontextmanager
async def serve(ext: APScheduler) -> AsyncIterator[Client]:
    """Start the scheduler, serve the app, and hand out a test client."""
    assert ext.app is not None
    ext.start()
    try:
        async with ext.app.test_app():
            yield ext.app.test_client()
    finally:
        if ext.running:
            ext.shutdown(wait=False)


async def jobs_snapshot(client: Client, **kwargs: Any) -> Any:
    response = await client.get(JOBS, **kwargs)
    assert response.status_code == 200
    return await response.get_json()


def add_existing(ext: APScheduler) -> None:
    ext.add_job(EXISTING, noop, trigger="interval", hours=1, args=[1], kwargs={"k": "v"})


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


# ---------------------------------------------------------------------------- allowlist


@pytest.mark.parametrize(
    "func", ["os:system", "subprocess:run", "builtins:eval", "posix:system", "shutil:rmtree"]
)
async def test_dangerous_functions_are_refused_with_403(app: Quart, func: str) -> None:
    ext = make_ext(app)
    add_existing(ext)
    async with serve(ext) as client:
        before = await jobs_snapshot(client)
        response = await client.post(
            JOBS,
            json={"id": "pwn", "func": func, "args": ["touch /tmp/x"]},
        )
        assert response.status_code == 403
        assert func in (await response.get_json())["error_message"]
        assert await jobs_snapshot(client) == before

        job_before = await (await client.get(EXISTING_URL)).get_json()
        response = await client.patch(EXISTING_URL, json={"func": func})
        assert response.status_code == 403
        assert await (await client.get(EXISTING_URL)).get_json() == job_before


@pytest.fixture
def sentinel_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A module on sys.path that leaves a marker file when imported."""
    name = "qs_sentinel_mod"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "def f(*args, **kwargs):\n"
        "    pass\n"
        "def g(*args, **kwargs):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name, marker
    sys.modules.pop(name, None)


async def test_refused_function_is_never_imported(app: Quart, sentinel_module: Any) -> None:
    name, marker = sentinel_module
    ext = make_ext(app, SCHEDULER_API_ALLOWED_FUNCS=[f"{name}:g"])
    add_existing(ext)
    async with serve(ext) as client:
        before = await jobs_snapshot(client)
        response = await client.post(JOBS, json={"id": "s", "func": f"{name}:f"})
        assert response.status_code == 403
        response = await client.patch(EXISTING_URL, json={"func": f"{name}:f"})
        assert response.status_code == 403
        assert await jobs_snapshot(client) == before
        assert name not in sys.modules
        assert not marker.exists()

        # The sentinel does work: its allowed neighbour imports it.
        response = await client.post(
            JOBS, json={"id": "s", "func": f"{name}:g", "trigger": "date", "run_date": FAR_FUTURE}
        )
        assert response.status_code == 200
        assert name in sys.modules
        assert marker.exists()


async def test_functions_allowed_in_code_config_and_globs_are_accepted(
    app: Quart, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tests_helpers_sec.py").write_text("def job(*args, **kwargs):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tests_helpers_sec", raising=False)
    ext = make_ext(
        app,
        SCHEDULER_API_ALLOWED_FUNCS=["tests_helpers_*:*"],
        SCHEDULER_JOBS=[
            {"id": "cfg", "func": f"{ME}:from_config", "trigger": "interval", "hours": 1}
        ],
    )

    @ext.api_function
    def registered() -> None:  # a nested function has no reference: nothing to allow
        pass

    ext.add_job("code", from_code, trigger="interval", hours=1)
    async with serve(ext) as client:
        for func in [
            f"{ME}:noop",  # @scheduler.api_function
            f"{ME}:from_code",  # a job defined in code
            f"{ME}:from_config",  # a job defined in config
            "tests_helpers_sec:job",  # SCHEDULER_API_ALLOWED_FUNCS glob
        ]:
            response = await client.post(
                JOBS,
                json={
                    "id": f"api-{func}",
                    "func": func,
                    "trigger": "date",
                    "run_date": FAR_FUTURE,
                },
            )
            assert response.status_code == 200, (func, await response.get_data(as_text=True))
            assert (await response.get_json())["func"] == func
        listed = await (await client.get(f"{API}/functions")).get_json()
        assert listed["patterns"] == ["tests_helpers_*:*"]
        assert {f"{ME}:noop", f"{ME}:from_code", f"{ME}:from_config"} <= set(listed["functions"])
        assert not any("registered" in func for func in listed["functions"])

        before = await jobs_snapshot(client)
        for func in ["tests_helper:job", "tests_helpersX:job", f"{ME}:other", f"{ME}:failing"]:
            response = await client.post(
                JOBS,
                json={"id": f"no-{func}", "func": func, "trigger": "date", "run_date": FAR_FUTURE},
            )
            assert response.status_code == 403, func
        assert await jobs_snapshot(client) == before


async def test_patch_may_change_func_only_to_an_allowed_function(app: Quart) -> None:
    ext = make_ext(app)
    ext.api_function(other)
    add_existing(ext)
    async with serve(ext) as client:
        before = await (await client.get(EXISTING_URL)).get_json()
        for func in ["os:system", f"{ME}:failing", f"{ME}:from_code"]:
            response = await client.patch(EXISTING_URL, json={"func": func, "args": [2]})
            assert response.status_code == 403, func
            assert await (await client.get(EXISTING_URL)).get_json() == before

        response = await client.patch(EXISTING_URL, json={"func": f"{ME}:other"})
        assert response.status_code == 200
        assert (await response.get_json())["func"] == f"{ME}:other"


async def test_glob_does_not_reach_modules_imported_by_an_allowed_module(
    app: Quart, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tests_helpers_esc.py").write_text(
        "import os\n\ndef job(*args, **kwargs):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tests_helpers_esc", raising=False)
    ext = make_ext(app, SCHEDULER_API_ALLOWED_FUNCS=["tests_helpers_*:*"])
    async with serve(ext) as client:
        before = await jobs_snapshot(client)
        # A date far ahead: even where the bug lets it in, nothing runs.
        response = await client.post(
            JOBS,
            json={
                "id": "esc",
                "func": "tests_helpers_esc:os.system",
                "args": ["true"],
                "trigger": "date",
                "run_date": FAR_FUTURE,
            },
        )
        ext.remove_all_jobs()  # whatever the outcome, never leave os.system scheduled
        assert response.status_code == 403, await response.get_data(as_text=True)
        assert await jobs_snapshot(client) == before


# --------------------------------------------------------------------------------- auth

USER, PASSWORD, TOKEN = "admin", "s3cret-pw", "tok-1"


def _basic_with_callback(ext: APScheduler) -> str:
    @ext.authenticate
    def check(auth: Any) -> bool:
        return compare_digest(auth["username"], USER) and compare_digest(
            auth["password"], PASSWORD
        )

    return basic(USER, PASSWORD)


def _basic_with_async_callback(ext: APScheduler) -> str:
    @ext.authenticate
    async def check(auth: Any) -> bool:
        await asyncio.sleep(0)
        return bool(auth["username"] == USER and auth["password"] == PASSWORD)

    return basic(USER, PASSWORD)


AUTH_SETUPS: dict[str, tuple[Callable[[], Any], Callable[[APScheduler], str], str]] = {
    "basic+callback": (HTTPBasicAuth, _basic_with_callback, "Basic"),
    "basic+async-callback": (HTTPBasicAuth, _basic_with_async_callback, "Basic"),
    "basic-users": (
        lambda: HTTPBasicAuth(users={"someone": "else", USER: PASSWORD}),
        lambda ext: basic(USER, PASSWORD),
        "Basic",
    ),
    "bearer-tokens": (
        lambda: HTTPBearerAuth(tokens=["tok-0", TOKEN]),
        lambda ext: f"Bearer {TOKEN}",
        "Bearer",
    ),
}


def _wrong_credentials(scheme: str) -> list[str]:
    if scheme == "Bearer":
        return ["Bearer tok-2", "Bearer tok-", f"Bearer {TOKEN}x", basic(USER, PASSWORD)]
    return [
        basic(USER, "wrong"),
        basic("root", PASSWORD),
        basic(USER, PASSWORD + "x"),
        basic(USER, ""),
        f"Bearer {TOKEN}",
    ]


def api_requests(app: Quart, ext: APScheduler) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route the extension registered."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(ext.endpoint_prefix):
            continue
        url = rule.rule.replace("<job_id>", EXISTING).replace("<filename>", "dashboard.js")
        assert "<" not in url, rule.rule
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


FLASK_APSCHEDULER_VIEWS = {
    "get_scheduler_info",
    "pause_scheduler",
    "resume_scheduler",
    "start_scheduler",
    "shutdown_scheduler",
    "add_job",
    "get_job",
    "get_jobs",
    "delete_job",
    "update_job",
    "pause_job",
    "resume_job",
    "run_job",
}


@pytest.mark.parametrize("setup", list(AUTH_SETUPS))
async def test_auth_guards_every_route(app: Quart, setup: str) -> None:
    make_auth, configure, scheme = AUTH_SETUPS[setup]
    ext = make_ext(app, SCHEDULER_AUTH=make_auth())
    good = configure(ext)
    add_existing(ext)
    RUNS.clear()
    async with serve(ext) as client:
        requests = api_requests(app, ext)
        endpoints = {endpoint for endpoint, _method, _url in requests}
        assert {f"scheduler.{view}" for view in FLASK_APSCHEDULER_VIEWS} <= endpoints
        assert len(requests) >= 16

        before = await jobs_snapshot(client, headers={"Authorization": good})
        attempts: list[dict[str, str]] = [{}]
        attempts += [{"Authorization": value} for value in _wrong_credentials(scheme)]
        for headers in attempts:
            for endpoint, method, url in requests:
                response = await client.open(url, method=method, headers=headers, json={})
                assert response.status_code == 401, (endpoint, method, headers)
                assert response.headers["WWW-Authenticate"] == (
                    f'{scheme} realm="Authentication Required"'
                )
                if method != "HEAD":
                    body = await response.get_data(as_text=True)
                    assert EXISTING not in body and "func" not in body
        assert ext.running
        assert await jobs_snapshot(client, headers={"Authorization": good}) == before
        assert RUNS.count("noop") == 0

        # With the right credentials every read route answers.
        for endpoint, method, url in requests:
            if method == "GET":
                response = await client.get(url, headers={"Authorization": good})
                assert response.status_code == 200, endpoint
        # The scheme is matched without regard to case.
        lower = good.split(" ", 1)[0].lower() + " " + good.split(" ", 1)[1]
        assert (await client.get(API, headers={"Authorization": lower})).status_code == 200


async def test_basic_auth_without_users_or_callback_refuses_everyone(app: Quart) -> None:
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth())
    async with serve(ext) as client:
        response = await client.get(API, headers={"Authorization": basic(USER, PASSWORD)})
        assert response.status_code == 401


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


MALFORMED_HEADERS = [
    pytest.param("", id="empty"),
    pytest.param("Basic", id="basic-no-value"),
    pytest.param("Basic ", id="basic-space"),
    pytest.param("Basic !!!not-base64!!!", id="bad-base64"),
    pytest.param("Basic YWRtaW46cHc", id="bad-padding"),
    pytest.param("Basic " + _b64(b"admin") + " x", id="two-values"),
    pytest.param("Basic " + _b64(b"no-colon-here"), id="missing-colon"),
    pytest.param("Basic " + _b64(b"\xff\xfe:pw"), id="non-utf8-credentials"),
    pytest.param("Digest x", id="digest"),
    pytest.param("Bearer " + _b64(b"admin:pw"), id="other-scheme"),
    pytest.param(_b64(b"admin:pw"), id="no-scheme"),
    pytest.param("Basic " + "A" * 10_000, id="oversized-10kB"),
    pytest.param("Basic " + _b64(b"admin:" + b"p" * 8_000), id="oversized-valid"),
    pytest.param("Basic \u00fc", id="non-ascii-str"),
    pytest.param("Basic " + _b64(b"admin:pw") + "\u00e9", id="non-ascii-suffix"),
]


@pytest.fixture
async def accept_all(app: Quart) -> AsyncIterator[tuple[Client, list[Any]]]:
    """Basic auth whose callback accepts whatever it is given (and records it): only
    parsing stands between a malformed header and a 200."""
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth())
    seen: list[Any] = []

    @ext.authenticate
    def check(auth: Any) -> bool:
        seen.append(dict(auth))
        return True

    async with serve(ext) as client:
        yield client, seen


@pytest.mark.parametrize("header", MALFORMED_HEADERS)
async def test_malformed_authorization_header_is_401_never_500(
    accept_all: tuple[Client, list[Any]], header: str
) -> None:
    client, seen = accept_all
    response = await client.get(API, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
    assert seen == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"Basic \xfc", id="latin-1-byte"),
        pytest.param(b"Basic \xc3\xbc:\xc3\xbc", id="utf-8-bytes"),
        pytest.param(b"Basic \xff\xfe\x00\x01", id="binary"),
        pytest.param(b"\xe2\x82\xac " + _b64(b"admin:pw").encode(), id="non-ascii-scheme"),
    ],
)
async def test_raw_non_ascii_authorization_bytes_are_401(
    accept_all: tuple[Client, list[Any]], raw: bytes
) -> None:
    client, seen = accept_all
    scope = {"headers": [(b"host", b"localhost"), (b"authorization", raw)]}
    response = await client.get(API, scope_base=scope)
    assert response.status_code == 401
    assert seen == []


async def test_utf8_username_and_password_reach_the_callback(
    accept_all: tuple[Client, list[Any]],
) -> None:
    client, seen = accept_all
    header = "Basic " + _b64("\u00fc:p\u00e4ss:word".encode())
    response = await client.get(API, headers={"Authorization": header})
    assert response.status_code == 200
    assert seen == [{"auth_type": "basic", "username": "\u00fc", "password": "p\u00e4ss:word"}]


async def test_utf8_credentials_with_fixed_users(app: Quart) -> None:
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth(users={"\u00fc": "m\u00f6t"}))
    async with serve(ext) as client:
        good = "Basic " + _b64("\u00fc:m\u00f6t".encode())
        bad = "Basic " + _b64("u:m\u00f6t".encode())
        assert (await client.get(API, headers={"Authorization": good})).status_code == 200
        assert (await client.get(API, headers={"Authorization": bad})).status_code == 401


async def test_auth_callback_that_raises_refuses_the_request_without_leaking(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding, not a contract: a raising callback reaches Quart's error handling (500)."""
    caplog.set_level(logging.DEBUG)
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth())

    @ext.authenticate
    def check(auth: Any) -> bool:
        raise RuntimeError("auth backend down")

    add_existing(ext)
    async with serve(ext) as client:
        header = basic(USER, "hunter2-secret")
        response = await client.get(EXISTING_URL, headers={"Authorization": header})
        assert response.status_code == 500  # fails closed
        text = await response.get_data(as_text=True)
        assert "hunter2" not in text and '"func"' not in text
        response = await client.delete(EXISTING_URL, headers={"Authorization": header})
        assert response.status_code == 500
        assert ext.get_job(EXISTING) is not None
    assert "auth backend down" in caplog.text  # the error is logged ...
    assert "hunter2" not in caplog.text  # ... without the credentials
    assert header.split()[1] not in caplog.text


# --------------------------------------------------------------------------- cross-site

UNSAFE_REQUESTS = [
    pytest.param("POST", JOBS, {"id": "new", "func": f"{ME}:noop"}, id="add"),
    pytest.param("PATCH", EXISTING_URL, {"args": [9]}, id="patch"),
    pytest.param("DELETE", EXISTING_URL, None, id="delete"),
    pytest.param("POST", f"{EXISTING_URL}/pause", None, id="pause-job"),
    pytest.param("POST", f"{EXISTING_URL}/run", None, id="run-job"),
    pytest.param("POST", f"{API}/pause", None, id="pause"),
    pytest.param("POST", f"{API}/shutdown", {"wait": False}, id="shutdown"),
]
CROSS_SITE_HEADERS = [
    pytest.param({"Origin": "https://evil.example"}, id="origin-evil"),
    pytest.param({"Origin": "http://localhost.evil.example"}, id="origin-suffix"),
    pytest.param({"Origin": "http://evil.example/localhost"}, id="origin-path"),
    pytest.param({"Origin": "http://localhost:8080"}, id="origin-other-port"),
    pytest.param({"Origin": "null"}, id="origin-null"),
    pytest.param({"Sec-Fetch-Site": "cross-site"}, id="fetch-cross-site"),
    pytest.param({"Sec-Fetch-Site": "same-site"}, id="fetch-same-site"),
    pytest.param({"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"}, id="fetch-wins"),
]


@pytest.mark.parametrize("headers", CROSS_SITE_HEADERS)
@pytest.mark.parametrize(("method", "url", "payload"), UNSAFE_REQUESTS)
async def test_cross_site_writes_are_refused_and_change_nothing(
    app: Quart, method: str, url: str, payload: Any, headers: dict[str, str]
) -> None:
    ext = make_ext(app)
    add_existing(ext)
    RUNS.clear()
    async with serve(ext) as client:
        before = await jobs_snapshot(client)
        response = await client.open(url, method=method, headers=headers, json=payload)
        assert response.status_code == 403
        assert "cross-site" in (await response.get_json())["error_message"]
        assert await jobs_snapshot(client) == before
        assert ext.state == STATE_RUNNING
        await asyncio.sleep(0.02)
        assert RUNS == []


async def test_cross_site_write_with_valid_basic_credentials_is_refused(app: Quart) -> None:
    """The browser case: a form post from another site riding on cached credentials."""
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth(users={USER: PASSWORD}))
    add_existing(ext)
    good = {"Authorization": basic(USER, PASSWORD)}
    async with serve(ext) as client:
        before = await jobs_snapshot(client, headers=good)
        response = await client.delete(
            EXISTING_URL, headers={**good, "Origin": "https://evil.example"}
        )
        assert response.status_code == 403
        assert await jobs_snapshot(client, headers=good) == before


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-origin"),
        pytest.param({"Origin": "http://localhost"}, id="same-origin"),
        pytest.param({"Origin": "http://LOCALHOST/"}, id="same-origin-case"),
        pytest.param({"Sec-Fetch-Site": "same-origin"}, id="fetch-same-origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="fetch-none"),
    ],
)
async def test_same_origin_and_non_browser_writes_are_allowed(
    app: Quart, headers: dict[str, str]
) -> None:
    ext = make_ext(app)
    add_existing(ext)
    async with serve(ext) as client:
        response = await client.post(
            JOBS,
            headers=headers,
            json={"id": "new", "func": f"{ME}:noop", "hours": 1, "trigger": "interval"},
        )
        assert response.status_code == 200
        response = await client.patch(EXISTING_URL, headers=headers, json={"args": [7]})
        assert response.status_code == 200
        assert (await response.get_json())["args"] == [7]
        response = await client.delete(EXISTING_URL, headers=headers)
        assert response.status_code == 204
        assert [job["id"] for job in await jobs_snapshot(client)] == ["new"]


async def test_cross_site_reads_are_allowed(app: Quart) -> None:
    ext = make_ext(app)
    add_existing(ext)
    async with serve(ext) as client:
        headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        for url in [API, JOBS, EXISTING_URL]:
            response = await client.get(url, headers=headers)
            assert response.status_code == 200, url


# ------------------------------------------------------------------------ DNS rebinding

#: A page on evil.example whose name was re-pointed at the API's address: the browser
#: sends the attacker's name as Host and as Origin, so the request looks same-origin.
REBINDING = {"Host": "evil.example", "Origin": "http://evil.example"}


async def test_dns_rebinding_passes_the_cross_site_check_alone(app: Quart) -> None:
    """Why SCHEDULER_API_TRUSTED_HOSTS exists (docs/howto/security.md)."""
    ext = make_ext(app)
    async with serve(ext) as client:
        response = await client.post(
            JOBS,
            headers=REBINDING,
            json={"id": "new", "func": f"{ME}:noop", "trigger": "interval", "hours": 1},
        )
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "payload"),
    [
        pytest.param("GET", JOBS, None, id="read-jobs"),
        pytest.param("GET", API, None, id="read-info"),
        *UNSAFE_REQUESTS,
    ],
)
async def test_trusted_hosts_refuse_a_dns_rebinding_request(
    app: Quart, method: str, url: str, payload: Any
) -> None:
    ext = make_ext(app, SCHEDULER_API_TRUSTED_HOSTS=["localhost", "sched.example.com"])
    add_existing(ext)
    RUNS.clear()
    async with serve(ext) as client:
        before = await jobs_snapshot(client)
        response = await client.open(url, method=method, headers=REBINDING, json=payload)
        assert response.status_code == 400
        message = (await response.get_json())["error_message"]
        assert "evil.example" in message and "SCHEDULER_API_TRUSTED_HOSTS" in message
        assert await jobs_snapshot(client) == before
        assert ext.state == STATE_RUNNING
        await asyncio.sleep(0.02)
        assert RUNS == []


@pytest.mark.parametrize(
    ("host", "trusted"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("sched.example.com", True),
        ("a.internal.example", True),
        ("internal.example:8443", True),
        ("[::1]:8000", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("sched.example.com.evil.example", False),
        ("notinternal.example", False),
        ("", False),
    ],
)
async def test_trusted_hosts_match_names_ports_and_subdomains(
    app: Quart, host: str, trusted: bool
) -> None:
    ext = make_ext(
        app,
        SCHEDULER_API_TRUSTED_HOSTS=[
            "localhost",
            "sched.example.com",
            ".internal.example",
            "[::1]",
        ],
    )
    async with serve(ext) as client:
        response = await client.get(JOBS, headers={"Host": host})
        assert (response.status_code == 200) is trusted, await response.get_data(as_text=True)


def test_trusted_hosts_must_be_a_list_of_names(app: Quart) -> None:
    app.config["SCHEDULER_API_TRUSTED_HOSTS"] = "localhost"
    with pytest.raises(ConfigurationError, match="SCHEDULER_API_TRUSTED_HOSTS"):
        APScheduler(app=app)


# --------------------------------------------------------------------------------- logs


async def test_no_credential_or_job_argument_reaches_a_log(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("quart_sched", "apscheduler", "quart", app.name, "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    ext = make_ext(app, SCHEDULER_AUTH=HTTPBasicAuth())
    ext.api_function(failing)

    @ext.authenticate
    def check(auth: Any) -> bool:
        return bool(auth["username"] == USER and auth["password"] == PASSWORD)

    good = {"Authorization": basic(USER, PASSWORD)}
    bad_header = basic(USER, "hunter2-secret")
    secrets = ["hunter2-secret", bad_header.split()[1], "tok-SECRET", "arg-SECRET"]
    async with serve(ext) as client:
        for url in [API, JOBS, f"{JOBS}/x"]:
            response = await client.get(url, headers={"Authorization": bad_header})
            assert response.status_code == 401
        response = await client.post(
            JOBS,
            headers={"Authorization": bad_header},
            json={"id": "leak", "func": f"{ME}:failing", "kwargs": {"token": "tok-SECRET"}},
        )
        assert response.status_code == 401

        failed: list[str] = []
        ext.add_listener(lambda event: failed.append(event.job_id), EVENT_JOB_ERROR)
        response = await client.post(
            JOBS,
            headers=good,
            json={
                "id": "leak",
                "func": f"{ME}:failing",
                "args": ["arg-SECRET"],
                "kwargs": {"token": "tok-SECRET"},
            },
        )
        assert response.status_code == 200
        await wait_until(lambda: "leak" in failed)  # the scheduled run (date trigger: now)

        response = await client.post(
            JOBS,
            headers=good,
            json={
                "id": "leak2",
                "func": f"{ME}:failing",
                "kwargs": {"token": "tok-SECRET"},
                "trigger": "interval",
                "hours": 1,
            },
        )
        assert response.status_code == 200
        response = await client.post(f"{JOBS}/leak2/run", headers=good)  # the run-now path
        assert response.status_code == 500
        assert "tok-SECRET" not in await response.get_data(as_text=True)
        response = await client.patch(
            f"{JOBS}/leak2", headers=good, json={"kwargs": {"token": "tok-SECRET", "n": 2}}
        )
        assert response.status_code == 200
        response = await client.post(
            JOBS, headers=good, json={"id": "x", "func": "os:system", "args": ["arg-SECRET"]}
        )
        assert response.status_code == 403

    assert "the job failed on purpose" in caplog.text  # the logs were captured
    for secret in secrets:
        assert secret not in caplog.text, secret


# -------------------------------------------------------------------------- concurrency


@pytest.fixture(params=["memory", "sqlite"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    url = f"sqlite:///{tmp_path}/jobs.sqlite"
    return {"SCHEDULER_JOBSTORES": {"default": SQLAlchemyJobStore(url=url)}}


async def test_concurrent_posts_with_one_id_add_exactly_one_job(
    app: Quart, store_config: dict[str, Any]
) -> None:
    ext = make_ext(app, **store_config)
    async with serve(ext) as client:
        payloads = [
            {"id": "dup", "func": f"{ME}:noop", "args": [i], "trigger": "interval", "hours": 1}
            for i in range(200)
        ]
        responses = await asyncio.gather(*(client.post(JOBS, json=p) for p in payloads))
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [409] * 199
        winner = next(r for r in responses if r.status_code == 200)
        jobs = await jobs_snapshot(client)
        assert len(jobs) == 1
        assert jobs[0]["args"] == (await winner.get_json())["args"]


@pytest.mark.parametrize("with_delete", [True, False], ids=["with-delete", "patches-only"])
async def test_concurrent_patches_never_mix_and_never_fail(
    app: Quart, store_config: dict[str, Any], with_delete: bool
) -> None:
    ext = make_ext(app, **store_config)
    async with serve(ext) as client:
        response = await client.post(
            JOBS, json={"id": "race", "func": f"{ME}:noop", "trigger": "interval", "hours": 1}
        )
        assert response.status_code == 200
        sent = [[i, f"arg-{i}", {"n": i}] for i in range(50)]
        calls = [client.patch(f"{JOBS}/race", json={"args": args}) for args in sent]
        if with_delete:
            calls.insert(25, client.delete(f"{JOBS}/race"))
        responses = await asyncio.gather(*calls)
        statuses = [response.status_code for response in responses]
        assert set(statuses) <= {200, 204, 404}, statuses
        for response in responses:
            if response.status_code == 200:
                assert (await response.get_json())["args"] in sent
        final = await client.get(f"{JOBS}/race")
        if with_delete:
            assert statuses[25] == 204
            assert final.status_code == 404
        else:
            assert final.status_code == 200
            assert (await final.get_json())["args"] in sent


# ---------------------------------------------------------------- persistence off the loop


class RecordingStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """Records which thread each store call ran on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, threading.Thread]] = []

    def _record(self, name: str) -> None:
        self.calls.append((name, threading.current_thread()))

    def add_job(self, job: Any) -> None:
        self._record("add_job")
        super().add_job(job)

    def update_job(self, job: Any) -> None:
        self._record("update_job")
        super().update_job(job)

    def remove_job(self, job_id: str) -> None:
        self._record("remove_job")
        super().remove_job(job_id)

    def lookup_job(self, job_id: str) -> Any:
        self._record("lookup_job")
        return super().lookup_job(job_id)

    def get_all_jobs(self) -> Any:
        self._record("get_all_jobs")
        return super().get_all_jobs()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> tuple[RecordingStore, Path]:
    path = tmp_path / "jobs.sqlite"
    store = RecordingStore(
        url=f"sqlite:///{path}", engine_options={"connect_args": {"timeout": 0.05}}
    )
    return store, path


async def test_api_works_on_a_persistent_store_without_store_io_on_the_loop(
    app: Quart, sqlite_store: tuple[RecordingStore, Path]
) -> None:
    store, _path = sqlite_store
    ext = make_ext(
        app,
        SCHEDULER_JOBSTORES={"default": store},
        SCHEDULER_API_ALLOWED_FUNCS=[f"{ME}:stored_*"],
    )
    async with serve(ext) as client:
        loop_thread = threading.current_thread()
        store.calls.clear()
        response = await client.post(
            JOBS,
            json={
                "id": "p",
                "func": f"{ME}:stored_job",
                "args": [1],
                "kwargs": {"a": "b"},
                "trigger": "interval",
                "hours": 1,
            },
        )
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert [job["id"] for job in await jobs_snapshot(client)] == ["p"]
        assert (await client.get(f"{JOBS}/p")).status_code == 200
        response = await client.patch(f"{JOBS}/p", json={"args": [2], "kwargs": {}})
        assert response.status_code == 200
        assert (await response.get_json())["args"] == [2]
        assert (await client.post(f"{JOBS}/p/pause")).status_code == 200
        paused = await (await client.get(f"{JOBS}/p")).get_json()
        assert paused["next_run_time"] is None
        assert (await client.post(f"{JOBS}/p/resume")).status_code == 200
        assert (await client.get(f"{JOBS}/p/next_run_times?n=2")).status_code == 200
        # What the store holds, read back through it (in a thread, as the API does).
        stored = await asyncio.to_thread(store.lookup_job, "p")
        assert (list(stored.args), stored.kwargs, stored.func_ref) == ([2], {}, f"{ME}:stored_job")
        assert (await client.delete(f"{JOBS}/p")).status_code == 204
        assert (await client.get(f"{JOBS}/p")).status_code == 404
        assert (await client.delete(f"{JOBS}/p")).status_code == 404

        names = {name for name, _thread in store.calls}
        assert {"add_job", "get_all_jobs", "lookup_job", "update_job", "remove_job"} <= names
        on_loop = [name for name, thread in store.calls if thread is loop_thread]
        assert on_loop == []


async def test_run_now_does_no_store_io_on_the_loop(
    app: Quart, sqlite_store: tuple[RecordingStore, Path]
) -> None:
    store, _path = sqlite_store
    ext = make_ext(
        app,
        SCHEDULER_JOBSTORES={"default": store},
        SCHEDULER_API_ALLOWED_FUNCS=[f"{ME}:stored_*"],
    )
    async with serve(ext) as client:
        loop_thread = threading.current_thread()
        response = await client.post(
            JOBS,
            json={"id": "r", "func": f"{ME}:stored_job", "trigger": "interval", "hours": 1},
        )
        assert response.status_code == 200
        store.calls.clear()
        RUNS.clear()
        response = await client.post(f"{JOBS}/r/run")
        assert response.status_code == 200
        assert RUNS == ["stored_job"]
        on_loop = [name for name, thread in store.calls if thread is loop_thread]
        assert on_loop == []


async def test_unreachable_store_is_503_and_changes_nothing(
    app: Quart, sqlite_store: tuple[RecordingStore, Path]
) -> None:
    store, path = sqlite_store
    ext = make_ext(
        app,
        SCHEDULER_JOBSTORES={"default": store},
        SCHEDULER_API_ALLOWED_FUNCS=[f"{ME}:stored_*"],
    )
    async with serve(ext) as client:
        response = await client.post(
            JOBS,
            json={"id": "kept", "func": f"{ME}:stored_job", "trigger": "interval", "hours": 1},
        )
        assert response.status_code == 200
        before = await jobs_snapshot(client)

        locker = sqlite3.connect(path, isolation_level=None, timeout=0.05)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            attempts = [
                ("GET", JOBS, None),
                ("GET", f"{JOBS}/kept", None),
                ("GET", f"{JOBS}/kept/next_run_times", None),
                (
                    "POST",
                    JOBS,
                    {"id": "new", "func": f"{ME}:stored_job", "hours": 1, "trigger": "interval"},
                ),
                ("PATCH", f"{JOBS}/kept", {"args": [5]}),
                ("PATCH", f"{JOBS}/kept", {"trigger": "cron", "minute": 5}),
                ("POST", f"{JOBS}/kept/pause", None),
                ("DELETE", f"{JOBS}/kept", None),
            ]
            for method, url, payload in attempts:
                response = await client.open(url, method=method, json=payload)
                text = await response.get_data(as_text=True)
                assert response.status_code == 503, (method, url, text)
                message = (await response.get_json())["error_message"]
                assert "job store" in message and "try again" in message, message
        finally:
            locker.execute("ROLLBACK")
            locker.close()

        assert await jobs_snapshot(client) == before
