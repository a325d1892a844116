"""The dashboard's routes without a browser: served with the API, behind its auth, with a
strict Content-Security-Policy; off with SCHEDULER_UI_ENABLED; the job JSON's
``trigger_description`` it shows. (The page at work: ``test_dashboard_browser.py``.)"""

from __future__ import annotations

import base64
import fnmatch
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

import quart_sched
from quart_sched import APScheduler
from quart_sched.auth import HTTPBasicAuth

BASIC = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
STATIC = ("dashboard.css", "dashboard.js", "favicon.svg")
PACKAGE = Path(quart_sched.__file__).parent / "dashboard"


async def noop() -> None:
    pass


def make_app(**config: Any) -> tuple[Quart, APScheduler]:
    app = Quart(__name__)
    defaults = {
        "SCHEDULER_API_ENABLED": True,
        "SCHEDULER_HISTORY": False,
        "SCHEDULER_AUTH": HTTPBasicAuth(users={"admin": "secret"}),
    }
    app.config.update({**defaults, **config})
    return app, APScheduler(app=app)


async def test_page_and_files_are_served_behind_auth_with_a_strict_csp() -> None:
    app, _ext = make_app()
    client = app.test_client()
    page = await client.get("/scheduler/ui", headers=BASIC)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.get_data(as_text=True)
    assert 'data-api="/scheduler"' in html
    for name in STATIC:
        assert f'"/scheduler/ui/static/{name}"' in html
        response = await client.get(f"/scheduler/ui/static/{name}", headers=BASIC)
        assert response.status_code == 200, name
        assert response.headers["Content-Security-Policy"] == policy
        assert await response.get_data() == (PACKAGE / name).read_bytes()
    assert (await client.get("/scheduler/ui/static/index.html", headers=BASIC)).status_code == 404
    assert (await client.get("/scheduler/ui/static/nope.js", headers=BASIC)).status_code == 404


async def test_without_credentials_every_dashboard_route_is_401() -> None:
    app, _ext = make_app()
    client = app.test_client()
    for path in ("/scheduler/ui", *(f"/scheduler/ui/static/{name}" for name in STATIC)):
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
        wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
        assert (await client.get(path, headers=wrong)).status_code == 401, path


def test_the_page_has_no_inline_script_or_style() -> None:
    """What the CSP would block, refused at the source too (the browser test sees it)."""
    html = (PACKAGE / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert " style=" not in html and "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no onclick= handlers
    script = (PACKAGE / "dashboard.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script and "eval(" not in script  # text goes in as text
    assert "http://" not in html + script.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html + script  # no CDN: works offline


async def test_the_prefix_follows_scheduler_api_prefix() -> None:
    app, _ext = make_app(SCHEDULER_API_PREFIX="/ops/jobs", SCHEDULER_AUTH=None)
    client = app.test_client()
    html = await (await client.get("/ops/jobs/ui")).get_data(as_text=True)
    assert 'data-api="/ops/jobs"' in html
    assert '"/ops/jobs/ui/static/dashboard.js"' in html
    assert (await client.get("/ops/jobs/ui/static/dashboard.js")).status_code == 200


async def test_the_page_follows_the_apps_root_path() -> None:
    app, _ext = make_app(SCHEDULER_AUTH=None)
    response = await app.test_client().get("/tools/scheduler/ui", root_path="/tools")
    html = await response.get_data(as_text=True)
    assert 'data-api="/tools/scheduler"' in html
    assert '"/tools/scheduler/ui/static/dashboard.js"' in html


async def test_ui_key_off_gives_404_and_leaves_the_api() -> None:
    app, _ext = make_app(SCHEDULER_UI_ENABLED=False)
    client = app.test_client()
    assert (await client.get("/scheduler/ui", headers=BASIC)).status_code == 404
    assert (
        await client.get("/scheduler/ui/static/dashboard.js", headers=BASIC)
    ).status_code == 404
    assert (await client.get("/scheduler/jobs", headers=BASIC)).status_code == 200


async def test_no_api_no_dashboard() -> None:
    app, _ext = make_app(SCHEDULER_API_ENABLED=False, SCHEDULER_UI_ENABLED=True)
    assert (await app.test_client().get("/scheduler/ui", headers=BASIC)).status_code == 404


async def test_cross_site_requests_are_refused_as_for_the_api() -> None:
    """The page only reads, but it goes through the API's guard all the same."""
    app, _ext = make_app(SCHEDULER_AUTH=None)
    client = app.test_client()
    headers = {"Sec-Fetch-Site": "cross-site"}
    assert (await client.get("/scheduler/ui", headers=headers)).status_code == 200
    assert (await client.post("/scheduler/pause", headers=headers)).status_code == 403


async def test_job_json_describes_each_trigger_in_words() -> None:
    app, ext = make_app(SCHEDULER_TIMEZONE="Europe/Paris")
    ext.add_job("every3", noop, trigger="interval", seconds=3)
    ext.add_job("hourly", noop, trigger="cron", minute=0, timezone="Asia/Shanghai")
    ext.add_job("daily", noop, trigger="cron", hour=6, minute=30)
    when = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=400)
    ext.add_job("once", noop, trigger="date", run_date=when)
    client = app.test_client()
    jobs = {
        job["id"]: job
        for job in await (await client.get("/scheduler/jobs", headers=BASIC)).get_json()
    }
    assert jobs["every3"]["trigger_description"] == "every 3 seconds"
    assert jobs["hourly"]["trigger_description"] == "at minute 0 of every hour, Asia/Shanghai"
    assert jobs["daily"]["trigger_description"] == "at 06:30 every day, Europe/Paris"
    assert jobs["once"]["trigger_description"] == f"once, at {when:%Y-%m-%d %H:%M:%S} UTC"


async def test_a_changed_trigger_is_shown_as_changed() -> None:
    """Trigger JSON and words are remembered per trigger object: a reschedule (a new
    trigger) shows at once, in both."""
    app, ext = make_app(SCHEDULER_TIMEZONE="Europe/Paris")
    ext.add_job("job", noop, trigger="cron", hour=6, minute=30)
    client = app.test_client()
    first = await (await client.get("/scheduler/jobs/job", headers=BASIC)).get_json()
    assert (first["hour"], first["trigger_description"]) == (
        "6",
        "at 06:30 every day, Europe/Paris",
    )
    changed = await client.patch(
        "/scheduler/jobs/job", json={"trigger": "cron", "hour": 7, "minute": 15}, headers=BASIC
    )
    assert changed.status_code == 200
    listed = await (await client.get("/scheduler/jobs", headers=BASIC)).get_json()
    (job,) = [job for job in listed if job["id"] == "job"]
    assert (job["hour"], job["minute"]) == ("7", "15")
    assert job["trigger_description"] == "at 07:15 every day, Europe/Paris"


async def test_a_400_names_the_field_for_the_form() -> None:
    body = '{"id": "x", "func": "m:f", "trigger": "interval", "seconds": "3"}'
    app, _ext = make_app()
    response = await app.test_client().post("/scheduler/jobs", data=body, headers=BASIC)
    assert response.status_code == 400
    assert await response.get_json() == {
        "error_message": "seconds must be a number, got string",
        "field": "seconds",
    }


def test_every_dashboard_file_ships_as_package_data() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((PACKAGE.parent.parent / "pyproject.toml").read_text("utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["quart_sched"]
    for path in PACKAGE.iterdir():
        relative = f"dashboard/{path.name}"
        assert any(fnmatch.fnmatch(relative, glob) for glob in globs), relative
    assert {"index.html", *STATIC} <= {path.name for path in PACKAGE.iterdir()}
