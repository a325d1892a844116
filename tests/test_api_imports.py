"""The API turns a client's ``module:qualname`` into a function safely.

Only the module before the colon is imported, and only once the allowlist allows the
reference; the rest is looked up with ``getattr``, so a package glob never imports a
submodule a client names (APScheduler's ``ref_to_obj`` would). Whatever an import raises,
``SystemExit`` included, is a 400 naming ``func`` and the worker keeps serving. The
fixture package is ``tests/apps/pkgglob``: its modules leave marker files when imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart
from test_api_http import Server, stop, wait_for_port

from quart_sched import APScheduler

from support import free_port

APPS = Path(__file__).parent / "apps"
JOBS = "/scheduler/jobs"
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
ALLOWED = ["pkgglob.tasks:*", "pkgglob.exiting:*"]


def _forget_pkgglob() -> None:
    for name in [n for n in sys.modules if n == "pkgglob" or n.startswith("pkgglob.")]:
        del sys.modules[name]


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The folder where pkgglob's modules leave a file named after them when imported."""
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("QS_PKGGLOB_MARKERS", str(folder))
    monkeypatch.syspath_prepend(str(APPS))
    _forget_pkgglob()
    yield folder
    _forget_pkgglob()


def imported(markers: Path) -> list[str]:
    return sorted(path.name for path in markers.iterdir())


def job_body(func: str, id: str = "new") -> dict[str, Any]:
    return {"id": id, "func": func, "trigger": "date", "run_date": FAR_FUTURE}


async def test_package_glob_never_imports_a_submodule_the_client_names(
    app: Quart, markers: Path
) -> None:
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=ALLOWED)
    ext = APScheduler(app=app)
    ext.add_job("existing", "pkgglob.tasks:job", trigger="interval", hours=1)
    ext.start()
    async with app.test_app():
        client = app.test_client()
        before = await (await client.get(JOBS)).get_json()
        for func in ["pkgglob.tasks:side", "pkgglob.tasks:side.job", "pkgglob.tasks:exits"]:
            for response in [
                await client.post(JOBS, json=job_body(func)),
                await client.patch(f"{JOBS}/existing", json={"func": func}),
            ]:
                message = (await response.get_json())["error_message"]
                assert response.status_code == 400, message
                assert func in message and "func" in message
        # A private name (the package's __main__ too) is not reached by a plain "*".
        for func in ["pkgglob.tasks:__main__", "pkgglob.tasks:_private"]:
            response = await client.post(JOBS, json=job_body(func))
            assert response.status_code == 403, await response.get_data(as_text=True)
        assert await (await client.get(JOBS)).get_json() == before
        assert imported(markers) == []
        assert not {"pkgglob.tasks.side", "pkgglob.tasks.exits", "pkgglob.tasks.__main__"} & set(
            sys.modules
        )
        assert ext.running


async def test_a_module_that_raises_systemexit_on_import_is_a_400(
    app: Quart, markers: Path
) -> None:
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=ALLOWED)
    ext = APScheduler(app=app)
    ext.start()
    async with app.test_app():
        client = app.test_client()
        response = await client.post(JOBS, json=job_body("pkgglob.exiting:job"))
        message = (await response.get_json())["error_message"]
        assert response.status_code == 400, message
        assert "func" in message and "SystemExit" in message
        assert imported(markers) == ["exiting"]  # allowed, so imported: and it was caught
        assert ext.running
        assert (await client.get(JOBS)).status_code == 200


async def test_the_allowed_module_is_imported_off_the_loop(app: Quart, markers: Path) -> None:
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=ALLOWED)
    ext = APScheduler(app=app)
    ext.start()
    async with app.test_app():
        response = await app.test_client().post(JOBS, json=job_body("pkgglob.tasks:job"))
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert (await response.get_json())["func"] == "pkgglob.tasks:job"
    tasks = sys.modules["pkgglob.tasks"]
    assert tasks.IMPORTED_BY is not threading.current_thread()


async def test_a_glob_naming_private_names_allows_them(app: Quart, markers: Path) -> None:
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_API_ALLOWED_FUNCS=["pkgglob.tasks:_*"])
    ext = APScheduler(app=app)
    assert ext.api_function_allowed("pkgglob.tasks:_private")
    assert not ext.api_function_allowed("pkgglob.tasks:job")
    ext.start()
    async with app.test_app():
        response = await app.test_client().post(JOBS, json=job_body("pkgglob.tasks:_private"))
        assert response.status_code == 200, await response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("pattern", "ref", "allowed"),
    [
        ("app.jobs:*", "app.jobs:report", True),
        ("app.jobs:*", "app.jobs:_helper", False),
        ("app.jobs:*", "app.jobs:Report.__call__", False),
        ("app.*:*", "app._internal:run", False),
        ("app.jobs:_*", "app.jobs:_helper", True),
        ("app.jobs:_helper", "app.jobs:_helper", True),
        ("app._internal:*", "app._internal:run", True),
        ("app._internal:*", "app._internal:_run", False),
        ("*", "app.jobs:__main__", False),
    ],
)
def test_globs_reach_private_names_only_when_they_spell_them_out(
    app: Quart, pattern: str, ref: str, allowed: bool
) -> None:
    app.config["SCHEDULER_API_ALLOWED_FUNCS"] = [pattern]
    assert APScheduler(app=app).api_function_allowed(ref) is allowed


# ------------------------------------------------------------------- over real HTTP


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """``hypercorn pkgglob_app:app`` in its own process group, with its markers folder."""
    port = free_port()
    log = tmp_path / "hypercorn.log"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=str(APPS),
        PYTHONDONTWRITEBYTECODE="1",
        QS_PKGGLOB_MARKERS=str(markers),
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "pkgglob_app:app"],
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        srv = Server(proc, log, f"http://127.0.0.1:{port}")
        wait_for_port(srv, port)
        yield srv, markers
    finally:
        stop(proc)


def test_the_worker_keeps_serving_after_an_import_that_raises_systemexit(
    server: tuple[Server, Path],
) -> None:
    srv, markers = server
    with httpx.Client(base_url=srv.base_url, timeout=10.0) as http:
        for func in ["pkgglob.tasks:exits", "pkgglob.exiting:job"]:
            response = http.post(JOBS, content=json.dumps(job_body(func)))
            assert response.status_code == 400, srv.output()
            assert "func" in response.json()["error_message"]
        assert imported(markers) == ["exiting"]
        response = http.post(JOBS, content=json.dumps(job_body("pkgglob.tasks:job", "ok")))
        assert response.status_code == 200, response.text
        assert [job["id"] for job in http.get(JOBS).json()] == ["ok"]
    assert srv.proc.poll() is None, srv.output()
