"""The REST API over real HTTP: ``hypercorn api_app:app`` in a subprocess, driven by httpx.

The app (``tests/apps/api_app.py``) calls ``scheduler.start()`` at import time and guards
the API with ``HTTPBasicAuth(users={"admin": "secret"})``. Bodies go out as curl sends
them with ``-d``: raw JSON bytes with no Content-Type header.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import free_port

APPS = Path(__file__).parent / "apps"
DEADLINE = 15.0
AUTH = ("admin", "secret")


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path, base_url: str) -> None:
        self.proc = proc
        self.log = log
        self.base_url = base_url

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def wait_for_port(server: Server, port: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"hypercorn exited early\n{server.output()}")
        try:
            # An open port is not enough: Hypercorn's parent binds it before the worker has
            # finished starting up. Wait for a real HTTP answer.
            httpx.get(f"http://127.0.0.1:{port}/scheduler", timeout=1.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"port {port} not open within {DEADLINE} s\n{server.output()}"
                ) from None
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server and its worker: the process group this test created."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "hypercorn.log"
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONDONTWRITEBYTECODE="1")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "api_app:app"],
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stop() ends the worker with it
        )
    try:
        srv = Server(proc, log, f"http://127.0.0.1:{port}")
        wait_for_port(srv, port)
        yield srv
    finally:
        stop(proc)


def test_api_over_http_with_basic_auth(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10.0) as http:
        # No credentials, or wrong ones: 401 with the Basic challenge.
        for auth in (None, ("admin", "wrong")):
            response = http.get("/scheduler", auth=auth)
            assert response.status_code == 401, server.output()
            assert response.text == "Access Denied"
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Authentication Required"'
        assert http.post("/scheduler/jobs", content=b"{}").status_code == 401

        http.auth = AUTH
        info = http.get("/scheduler").json()
        assert list(info)[:4] == ["current_host", "allowed_hosts", "running", "state"]
        assert info["running"] is True  # started at import time, running once served
        assert info["role"] == "leader"  # the only worker leads

        # Add, curl-style: raw JSON, no Content-Type header.
        body = {
            "id": "greet",
            "func": "api_app:greet",
            "args": ["http"],
            "trigger": "interval",
            "hours": 1,
        }
        request = http.build_request("POST", "/scheduler/jobs", content=json.dumps(body))
        assert "content-type" not in request.headers
        response = http.send(request)
        assert response.status_code == 200, response.text
        added = response.json()
        assert (added["id"], added["name"], added["func"]) == ("greet", "greet", "api_app:greet")
        assert (added["trigger"], added["hours"], added["next_run_time"] is not None) == (
            "interval",
            1,
            True,
        )
        assert [job["id"] for job in http.get("/scheduler/jobs").json()] == ["greet"]

        # Run it now: it runs in the server, in the app's context.
        response = http.post("/scheduler/jobs/greet/run")
        assert response.status_code == 200, response.text
        assert response.json()["running_instances"] == 0
        assert http.get("/calls").json() == {"calls": [{"name": "http", "app": "api_app"}]}

        response = http.patch(
            "/scheduler/jobs/greet", content=b'{"name": "renamed", "args": ["patched"]}'
        )
        assert response.status_code == 200, response.text
        assert (response.json()["name"], response.json()["args"]) == ("renamed", ["patched"])

        response = http.post("/scheduler/jobs/greet/pause")
        assert response.status_code == 200
        assert response.json()["next_run_time"] is None
        assert http.get("/scheduler/jobs/greet").json()["next_run_time"] is None

        response = http.delete("/scheduler/jobs/greet")
        assert (response.status_code, response.content) == (204, b"")
        response = http.get("/scheduler/jobs/greet")
        assert response.status_code == 404
        assert "greet" in response.json()["error_message"]
        assert http.get("/scheduler/jobs").json() == []
        assert http.get("/scheduler").json()["running"] is True

    assert server.proc.poll() is None, server.output()
