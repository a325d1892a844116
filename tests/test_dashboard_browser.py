"""The dashboard in a real headless browser: Debian's chromium driven by Playwright.

The app (``tests/apps/dashboard_app.py``) is served by a real Hypercorn subprocess with
Basic auth; the browser signs in with the context's HTTP credentials, as a person would
in the browser's sign-in prompt. What the page did is checked over HTTP with httpx.

Without chromium (or Playwright) these tests skip, naming what is missing, unless
``QUART_SCHED_REQUIRE_BROWSER=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import free_port

APPS = Path(__file__).parent / "apps"
CHROMIUM = os.environ.get("QUART_SCHED_CHROMIUM", "/usr/bin/chromium")
AUTH = ("admin", "secret")
DEADLINE = 15.0
TIMEOUT_MS = 15_000  # per browser wait: generous, the machine is shared


def _missing(what: str) -> None:
    message = f"{what}; install it with: apt-get install -y chromium && pip install playwright"
    if os.environ.get("QUART_SCHED_REQUIRE_BROWSER") == "1":
        pytest.fail(f"QUART_SCHED_REQUIRE_BROWSER=1 but {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed")
    if not (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)):
        _missing(f"chromium is not installed at {CHROMIUM}")
    with sync_playwright() as playwright:
        # Debian's chromium, never a downloaded build; no sandbox: CI runs as root.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, base_url: str) -> None:
        self.proc = proc
        self.log = log
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, auth=AUTH, timeout=10)

    def job(self, job_id: str) -> httpx.Response:
        return self.http.get(f"/scheduler/jobs/{job_id}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    log = tmp / "hypercorn.log"
    env = dict(
        os.environ,
        PYTHONPATH=str(APPS),
        PYTHONDONTWRITEBYTECODE="1",
        DASHBOARD_HISTORY=str(tmp / "history.sqlite"),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hypercorn",
                "--bind",
                f"127.0.0.1:{port}",
                "dashboard_app:app",
            ],
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, log, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if server.http.get("/scheduler").json()["state"] == "running":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"not serving within {DEADLINE} s\n{log.read_text()}"
            )
            time.sleep(0.05)
        yield server
    finally:
        server.http.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_for(predicate: Any, what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(http_credentials={"username": "admin", "password": "secret"})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation (an inline script or style) shows as a console error. So does each
    # refused request, which the form test makes on purpose: those are left out.
    refused = re.compile(r"^Failed to load resource: .* status of (400|403|409) ")
    page.on(
        "console",
        lambda m: (
            problems.append(m.text) if m.type == "error" and not refused.match(m.text) else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    response = page.goto(server.base_url + "/scheduler/ui")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector('#job-rows tr[data-job="heartbeat"]')
    yield page
    context.close()
    assert problems == [], problems


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'#job-rows tr[data-job="{job_id}"]')


def test_page_shows_every_job_with_its_trigger_in_words(page: Any, server: Server) -> None:
    expected = {
        "heartbeat": "every 2 seconds",
        "flaky": "every 3 seconds",
        "slow": "at minute 0 of every hour, Asia/Shanghai",
        "report": "at 06:30 every day, Europe/Paris",
    }
    for job_id, words in expected.items():
        assert row(page, job_id).locator(".c-trigger").inner_text() == words
    assert page.locator("#state").inner_text() == "running"
    assert page.locator("#role").inner_text() == "leader"  # the only process leads
    assert "epoch" in (page.locator("#role").get_attribute("title") or "")
    # Runs happened: outcomes in the strip, and the last run's outcome.
    page.wait_for_selector('#job-rows tr[data-job="heartbeat"] .c-recent rect.o-success')
    page.wait_for_selector('#job-rows tr[data-job="heartbeat"] .c-last .o-success')
    page.wait_for_selector("#hourly svg rect.o-success")


def test_pause_and_resume_a_job_by_mouse_and_keyboard(page: Any, server: Server) -> None:
    assert server.job("report").json()["next_run_time"] is not None
    row(page, "report").locator('button[data-action="pause"]').click()
    row(page, "report").locator(".c-job .s-paused").wait_for()
    assert server.job("report").json()["next_run_time"] is None  # paused in the API
    resume = row(page, "report").locator('button[data-action="resume"]')
    resume.focus()
    page.keyboard.press("Enter")
    wait_for(lambda: server.job("report").json()["next_run_time"] is not None, "resumed")
    row(page, "report").locator(".c-job .s-paused").wait_for(state="detached")
    # The same button, now "Pause", keeps the keyboard focus across refreshes.
    assert page.evaluate("document.activeElement.dataset.job") == "report"
    assert page.evaluate("document.activeElement.textContent") == "Pause"


def test_pause_and_resume_the_scheduler(page: Any, server: Server) -> None:
    page.locator("#pause-scheduler").click()
    page.locator("#state.s-paused").wait_for()
    assert server.http.get("/scheduler").json()["state"] == "paused"
    page.locator("#resume-scheduler").click()
    page.locator("#state.s-running").wait_for()
    assert server.http.get("/scheduler").json()["state"] == "running"


def test_run_now_shows_the_run_running_then_its_outcome(page: Any, server: Server) -> None:
    before = len(server.http.get("/scheduler/jobs/slow/runs").json())
    row(page, "slow").locator('button[data-action="run"]').click()  # slow takes 2 s
    page.locator("#running li", has_text="slow").wait_for()
    page.locator('#run-rows tr[data-outcome="running"]').wait_for()
    page.locator('#run-rows tr[data-outcome="success"]').wait_for()
    page.locator("#running li", has_text="slow").wait_for(state="detached")
    runs = server.http.get("/scheduler/jobs/slow/runs").json()
    assert len(runs) == before + 1 and runs[0]["outcome"] == "success"
    assert row(page, "slow").locator(".c-last .o-success").count() == 1


def test_history_shows_errors_and_the_traceback_on_demand(page: Any, server: Server) -> None:
    row(page, "flaky").locator('button[data-action="history"]').click()
    failed = page.locator('#run-rows tr[data-outcome="error"]').first
    failed.wait_for()
    assert "ConnectionError: mail server refused the connection" in failed.inner_text()
    traceback = failed.locator("pre.traceback")
    assert not traceback.is_visible()
    failed.locator("summary").click()
    assert "raise ConnectionError" in traceback.inner_text()
    page.wait_for_selector("#durations svg rect.o-error")


def test_remove_asks_first(page: Any, server: Server) -> None:
    remove = row(page, "newyear").locator('button[data-action="remove"]')
    remove.focus()
    page.keyboard.press("Enter")
    assert page.locator("#confirm").is_visible()
    page.keyboard.press("Escape")  # the keyboard way out
    page.locator("#confirm").wait_for(state="hidden")
    assert page.evaluate("document.activeElement.dataset.action") == "remove"
    remove.click()
    page.locator("#confirm-cancel").click()
    page.locator("#confirm").wait_for(state="hidden")
    assert server.job("newyear").status_code == 200  # cancelled twice: still there
    remove.click()
    page.locator("#confirm-ok").click()
    row(page, "newyear").wait_for(state="detached")
    assert server.job("newyear").status_code == 404


def test_add_job_form_shows_the_apis_message_next_to_the_field(page: Any, server: Server) -> None:
    form = page.locator("#add-job")
    form.locator("#f-id").fill("from-page")
    form.locator("#f-func").fill("dashboard_app:heartbeat")
    form.locator("#f-seconds").fill("soon")
    form.locator("button[type=submit]").click()
    page.locator("#e-seconds", has_text="seconds must be a number, got string").wait_for()
    assert form.locator("#f-seconds").get_attribute("aria-invalid") == "true"
    assert server.job("from-page").status_code == 404  # refused: nothing changed

    form.locator("#f-trigger").select_option("cron")
    form.locator("#f-hour").fill("25")
    form.locator("button[type=submit]").click()
    page.locator("#e-hour", has_text="hour").wait_for()
    assert page.locator("#e-seconds").inner_text() == ""  # the old message is gone

    form.locator("#f-func").fill("os:system")
    form.locator("#f-hour").fill("4")
    form.locator("button[type=submit]").click()
    page.locator("#e-func", has_text="may not be scheduled over the API").wait_for()

    form.locator("#f-func").fill("dashboard_app:report")
    form.locator("#f-args").fill('["ops@example.com"]')
    form.locator("button[type=submit]").click()
    row(page, "from-page").wait_for()
    assert row(page, "from-page").locator(".c-trigger").inner_text() == (
        "at 04:00 every day, Europe/Paris"
    )
    assert server.job("from-page").json()["args"] == ["ops@example.com"]


def test_readable_on_a_phone(browser: Any, server: Server) -> None:
    context = browser.new_context(
        http_credentials={"username": "admin", "password": "secret"},
        viewport={"width": 390, "height": 844},
        is_mobile=True,
    )
    page = context.new_page()
    page.goto(server.base_url + "/scheduler/ui")
    page.wait_for_selector('#job-rows tr[data-job="heartbeat"]')
    # No sideways scrolling, and each job's cells stack with their labels.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert (
        row(page, "heartbeat")
        .locator(".c-trigger")
        .evaluate("cell => getComputedStyle(cell).display")
        == "block"
    )
    context.close()


def test_without_credentials_the_page_is_refused(browser: Any, server: Server) -> None:
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context()
    page = context.new_page()
    # Headless, nobody answers the browser's sign-in prompt: the navigation fails.
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        page.goto(server.base_url + "/scheduler/ui")
    answer = context.request.get(server.base_url + "/scheduler/ui")
    assert answer.status == 401 and answer.text() == "Access Denied"
    context.close()
    for path in ("/scheduler/ui", "/scheduler/ui/static/dashboard.js"):
        bare = httpx.get(server.base_url + path)
        assert bare.status_code == 401
        assert bare.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
