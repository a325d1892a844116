"""Jobs in a persistent store (SQLAlchemy on a real SQLite file) across restarts.

Config and ``@task`` jobs are upserted when the app starts again (no ConflictingIdError),
keep a paused state, and fire again; jobs added at runtime survive a restart; a job a
persistent store cannot hold is refused at ``add_job``/``modify_job`` with an error naming
the culprit, and nothing is written.
"""

from __future__ import annotations

import importlib
import itertools
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.base import BaseTrigger
from quart import Quart

from quart_sched import APScheduler, ConflictingIdError, JobNotStorableError

import jobfuncs
from support import wait_until

TESTS_DIR = Path(__file__).resolve().parent
FAR_FUTURE = "2099-01-01T00:00:00+00:00"
_names = itertools.count()


def make_app(
    db: Path, jobs: list[dict[str, Any]] | None = None, *, store_form: str = "object"
) -> tuple[Quart, APScheduler]:
    """A new app and extension on the SQLite file ``db``, as a fresh process would build."""
    app = Quart(f"persistence_{next(_names)}")
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = 2
    url = f"sqlite:///{db}"
    store: Any = (
        SQLAlchemyJobStore(url=url)
        if store_form == "object"
        else {"type": "sqlalchemy", "url": url}
    )
    app.config["SCHEDULER_JOBSTORES"] = {"default": store}
    app.config["SCHEDULER_JOBS"] = [dict(job) for job in jobs or []]
    return app, APScheduler(app=app)


@asynccontextmanager
async def serving(app: Quart, scheduler: APScheduler) -> AsyncIterator[APScheduler]:
    """Serve ``app`` with its scheduler running; stores close when serving stops."""
    async with app.test_app():
        scheduler.start()
        yield scheduler


def stored(db: Path) -> dict[str, tuple[float | None, bytes]]:
    """``id -> (next_run_time, job_state)`` as the file holds them, read independently."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, next_run_time, job_state FROM apscheduler_jobs").fetchall()
    return {job_id: (next_run, state) for job_id, next_run, state in rows}


def interval_job(job_id: str, name: str, seconds: float = 0.1) -> dict[str, Any]:
    return {
        "id": job_id,
        "func": "jobfuncs:tick",
        "args": [name],
        "trigger": "interval",
        "seconds": seconds,
    }


def later_job(job_id: str) -> dict[str, Any]:
    """A job that never fires during a test, so its stored row stays the same."""
    return {"id": job_id, "func": jobfuncs.tick_with, "args": [job_id], "run_date": FAR_FUTURE}


# ---------------------------------------------------------------------------- restart


@pytest.mark.parametrize("store_form", ["object", "dict"])
async def test_config_jobs_are_upserted_on_restart_and_fire_again(
    tmp_path: Path, store_form: str
) -> None:
    db = tmp_path / "jobs.sqlite"
    name = f"restart-{store_form}"
    jobs = [interval_job("beat", name), later_job("later")]

    app, scheduler = make_app(db, jobs, store_form=store_form)
    async with serving(app, scheduler):
        await wait_until(lambda: jobfuncs.RUNS[name] >= 1)
    assert set(stored(db)) == {"beat", "later"}
    before = jobfuncs.RUNS[name]

    # A second process would build the same app again: its config jobs replace the stored
    # ones instead of raising ConflictingIdError.
    app, scheduler = make_app(db, jobs, store_form=store_form)
    async with serving(app, scheduler):
        assert sorted(job.id for job in scheduler.get_jobs()) == ["beat", "later"]
        await wait_until(lambda: jobfuncs.RUNS[name] >= before + 2)
    assert set(stored(db)) == {"beat", "later"}


async def test_adding_an_existing_id_without_replace_still_conflicts(tmp_path: Path) -> None:
    """Only config and @task jobs are upserted: add_job keeps APScheduler's conflict check."""
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [later_job("later")])
    async with serving(app, scheduler):
        with pytest.raises(ConflictingIdError):
            scheduler.add_job("later", jobfuncs.tick, args=["x"], run_date=FAR_FUTURE)
    assert set(stored(db)) == {"later"}


RESTART_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys
    from pathlib import Path

    from quart import Quart
    from quart_sched import APScheduler

    db, out, run = sys.argv[1:4]
    app = Quart("restarted")
    app.config["SCHEDULER_JOBSTORES"] = {
        "default": {"type": "sqlalchemy", "url": f"sqlite:///{db}"}
    }
    app.config["SCHEDULER_JOBS"] = [
        {
            "id": "beat",
            "func": "jobfuncs:append_line",
            "args": [out, run],
            "trigger": "interval",
            "seconds": 0.1,
        }
    ]
    scheduler = APScheduler(app=app)
    scheduler.start()  # no running loop yet: starts when the app serves


    async def main() -> None:
        async with app.test_app():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            path = Path(out)
            while run not in (path.read_text().split() if path.exists() else []):
                if loop.time() > deadline:
                    sys.exit(f"run {run}: the job never fired")
                await asyncio.sleep(0.02)
            print(",".join(sorted(job.id for job in scheduler.get_jobs())))


    asyncio.run(main())
    """
)


def test_config_jobs_survive_a_real_process_restart(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    out = tmp_path / "fired.txt"
    script = tmp_path / "app_script.py"
    script.write_text(RESTART_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}
    for run in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-W", "error", str(script), str(db), str(out), run],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "ConflictingIdError" not in result.stderr
        assert result.stdout.split() == ["beat"]
    assert set(out.read_text().split()) == {"1", "2"}
    # The second run's arguments replaced the first's in the one stored row.
    assert list(stored(db)) == ["beat"]


# ------------------------------------------------------------------------------ pause


@pytest.mark.parametrize("declared_by", ["config", "task"])
async def test_paused_job_stays_paused_when_the_app_restarts(
    tmp_path: Path, declared_by: str
) -> None:
    db = tmp_path / "jobs.sqlite"
    name = f"paused-{declared_by}"
    beat = f"beat-{declared_by}"

    def build() -> tuple[Quart, APScheduler]:
        jobs = [interval_job("beat", beat)]
        if declared_by == "config":
            jobs.append(interval_job("pausable", name))
        app, scheduler = make_app(db, jobs)
        if declared_by == "task":
            # What `@scheduler.task(...)` over a module-level function does.
            scheduler.task("interval", id="pausable", seconds=0.1, args=[name])(jobfuncs.tick)
        return app, scheduler

    app, scheduler = build()
    async with serving(app, scheduler):
        scheduler.pause_job("pausable")
    assert stored(db)["pausable"][0] is None
    runs_before = jobfuncs.RUNS[name]
    beats_before = jobfuncs.RUNS[beat]

    app, scheduler = build()
    async with serving(app, scheduler):
        job = scheduler.get_job("pausable")
        assert job is not None
        assert job.next_run_time is None
        # Three beats at the same interval: the paused job would have fired meanwhile.
        await wait_until(lambda: jobfuncs.RUNS[beat] >= beats_before + 3)
        assert jobfuncs.RUNS[name] == runs_before
        assert stored(db)["pausable"][0] is None

        scheduler.resume_job("pausable")
        await wait_until(lambda: jobfuncs.RUNS[name] >= runs_before + 1)


# ---------------------------------------------------------------------- runtime jobs


async def test_job_added_at_runtime_survives_restart_and_fires(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db)
    async with serving(app, scheduler):
        scheduler.add_job(
            "runtime", jobfuncs.tick_sync, trigger="interval", seconds=0.1, args=["runtime"]
        )
        await wait_until(lambda: jobfuncs.RUNS["runtime"] >= 1)
    before = jobfuncs.RUNS["runtime"]
    assert list(stored(db)) == ["runtime"]

    app, scheduler = make_app(db)  # declares no job: everything comes from the file
    async with serving(app, scheduler):
        job = scheduler.get_job("runtime")
        assert job is not None
        assert job.func is jobfuncs.tick_sync
        assert job.args == ("runtime",)
        await wait_until(lambda: jobfuncs.RUNS["runtime"] >= before + 2)


# ---------------------------------------------------------------- text references


async def test_job_function_given_as_text_reference_resolves(tmp_path: Path) -> None:
    # The reference works because pytest puts the tests folder on sys.path.
    assert str(TESTS_DIR) in sys.path
    assert Path(importlib.import_module("jobfuncs").__file__ or "") == TESTS_DIR / "jobfuncs.py"

    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [interval_job("from-config", "text-config")])
    async with serving(app, scheduler):
        scheduler.add_job(
            "from-code", "jobfuncs:tick_sync", trigger="interval", seconds=0.1, args=["text-code"]
        )
        for job_id, func in [("from-config", jobfuncs.tick), ("from-code", jobfuncs.tick_sync)]:
            job = scheduler.get_job(job_id)
            assert job is not None
            assert job.func is func
            assert job.func_ref == f"jobfuncs:{func.__name__}"
        await wait_until(lambda: jobfuncs.RUNS["text-config"] >= 1)
        await wait_until(lambda: jobfuncs.RUNS["text-code"] >= 1)


# ------------------------------------------------------------------ unstorable jobs


class _LocalTrigger(BaseTrigger):  # type: ignore[misc]
    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        return None if previous else now + timedelta(days=1)


def _unstorable_trigger() -> BaseTrigger:
    # A class pickle cannot find by name: it lives inside a function.
    class Trigger(_LocalTrigger):
        pass

    return Trigger()


def _nested_function() -> Any:
    def job() -> None:
        pass

    return job


@pytest.fixture(params=["lambda", "nested", "args-lock", "kwargs-socket", "trigger"])
def unstorable(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, Any], str]]:
    """``add_job`` keyword arguments a persistent store cannot hold, and the culprit."""
    with socket.socket() as sock:
        cases: dict[str, tuple[dict[str, Any], str]] = {
            "lambda": ({"func": lambda: None, "run_date": FAR_FUTURE}, "func"),
            "nested": ({"func": _nested_function(), "run_date": FAR_FUTURE}, "func"),
            "args-lock": (
                {
                    "func": jobfuncs.tick_with,
                    "args": ["x", threading.Lock()],
                    "run_date": FAR_FUTURE,
                },
                "args[1]",
            ),
            "kwargs-socket": (
                {
                    "func": jobfuncs.tick_with,
                    "kwargs": {"name": "x", "conn": sock},
                    "run_date": FAR_FUTURE,
                },
                "kwargs['conn']",
            ),
            "trigger": (
                {"func": jobfuncs.tick, "args": ["x"], "trigger": _unstorable_trigger()},
                "trigger",
            ),
        }
        yield cases[request.param]


def _assert_names(error: JobNotStorableError, job_id: str, culprit: str) -> None:
    assert isinstance(error, ValueError)
    assert error.job_id == job_id
    assert error.culprit == culprit
    assert repr(job_id) in str(error)
    assert culprit in str(error)


async def test_unstorable_job_is_refused_before_start(
    tmp_path: Path, unstorable: tuple[dict[str, Any], str]
) -> None:
    kwargs, culprit = unstorable
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [later_job("keeper")])

    with pytest.raises(JobNotStorableError) as caught:
        scheduler.add_job("bad", **kwargs)
    _assert_names(caught.value, "bad", culprit)
    assert [job.id for job in scheduler.get_jobs()] == ["keeper"]

    async with serving(app, scheduler):  # the refused job is not added at start either
        assert [job.id for job in scheduler.get_jobs()] == ["keeper"]
    assert list(stored(db)) == ["keeper"]


async def test_unstorable_job_is_refused_while_running(
    tmp_path: Path, unstorable: tuple[dict[str, Any], str]
) -> None:
    kwargs, culprit = unstorable
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [later_job("keeper")])
    async with serving(app, scheduler):
        rows = stored(db)
        with pytest.raises(JobNotStorableError) as caught:
            scheduler.add_job("bad", **kwargs)
        _assert_names(caught.value, "bad", culprit)
        assert scheduler.get_job("bad") is None
        assert stored(db) == rows


def _refuse_unstorable_modifications(scheduler: APScheduler) -> None:
    with pytest.raises(JobNotStorableError) as caught:
        scheduler.modify_job("job", args=["job", threading.Lock()])
    _assert_names(caught.value, "job", "args[1]")
    with pytest.raises(JobNotStorableError) as caught, socket.socket() as sock:
        scheduler.modify_job("job", kwargs={"conn": sock})
    _assert_names(caught.value, "job", "kwargs['conn']")
    with pytest.raises(JobNotStorableError) as caught:
        scheduler.modify_job("job", func=lambda name: None)
    _assert_names(caught.value, "job", "func")
    job = scheduler.get_job("job")
    assert job is not None
    assert job.func is jobfuncs.tick_with
    assert tuple(job.args) == ("job",)
    assert job.kwargs == {}


async def test_modify_job_with_unstorable_argument_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [later_job("job")])
    async with serving(app, scheduler):
        rows = stored(db)
        _refuse_unstorable_modifications(scheduler)
        assert stored(db) == rows
        # A storable change still goes through, to the file.
        scheduler.modify_job("job", args=["changed"])
        job = scheduler.get_job("job")
        assert job is not None
        assert tuple(job.args) == ("changed",)
        assert stored(db)["job"] != rows["job"]


async def test_modify_pending_job_with_unstorable_argument_changes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite"
    app, scheduler = make_app(db, [later_job("job")])
    _refuse_unstorable_modifications(scheduler)
    async with serving(app, scheduler):
        job = scheduler.get_job("job")
        assert job is not None
        assert tuple(job.args) == ("job",)


@pytest.mark.parametrize(
    "changes",
    [{"args": ["changed"]}, {"trigger": "interval", "seconds": 0.1}],
    ids=["args", "trigger"],
)
async def test_modify_pending_job_before_start(
    app: Quart, scheduler: APScheduler, changes: dict[str, Any]
) -> None:
    scheduler.add_job("job", jobfuncs.tick, args=["pending-modify"], run_date=FAR_FUTURE)
    scheduler.modify_job("job", **changes)
    async with serving(app, scheduler):
        job = scheduler.get_job("job")
        assert job is not None
        assert job.next_run_time is not None


async def test_memory_store_takes_any_job(app: Quart, scheduler: APScheduler) -> None:
    """No storability check without a persistent store: lambdas and locks are fine."""
    lock = threading.Lock()
    seen: list[object] = []
    scheduler.add_job("pending", lambda held: seen.append(held), args=[lock], run_date=FAR_FUTURE)
    async with serving(app, scheduler):
        scheduler.add_job(
            "running", lambda held: seen.append(held), trigger="interval", seconds=0.1, args=[lock]
        )
        assert scheduler.get_job("pending") is not None
        await wait_until(lambda: len(seen) >= 1)
    assert seen[0] is lock
