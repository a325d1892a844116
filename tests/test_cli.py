"""``quart scheduler …``, run as a shell user runs it: real ``quart --app`` subprocesses.

The app is ``tests/apps/cli_app.py`` on a real SQLite job store (SQLAlchemyJobStore on a
file in ``tmp_path``), steered while a real Hypercorn server or a ``quart scheduler worker``
runs its jobs from the same store. Jobs append lines (``tick <pid>``, ``beat <pid>``,
``started``/``finished <pid>``) to a file, which the tests poll with deadlines.

The in-process tests at the end cover :meth:`APScheduler.open_stores`, which the commands
are built on.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from apps.harness import DEADLINE, Process, hypercorn
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from quart import Quart

from quart_sched import APScheduler, JobLookupError
from quart_sched.errors import JobStoreUnavailableError, SchedulerAlreadyRunningError

from support import free_port

APPS = Path(__file__).parent / "apps"
QUART = str(Path(sys.executable).parent / "quart")


class Setup:
    """Paths and environment of one test's app: its job store, history and output file."""

    def __init__(self, tmp_path: Path) -> None:
        self.ticks = tmp_path / "ticks"
        self.ticks.touch()
        self.env = {
            "JOBSTORE": str(tmp_path / "jobs.sqlite"),
            "HISTORY": str(tmp_path / "history.sqlite"),
            "TICKS": str(self.ticks),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``quart --app cli_app scheduler ARGS``, to its end."""
        return subprocess.run(
            [QUART, "--app", "cli_app", "scheduler", *args],
            cwd=APPS,
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=DEADLINE * 2,
        )

    def json(self, *args: str, **env: str) -> Any:
        done = self.cli(*args, "--json", **env)
        assert done.returncode == 0, done
        return json.loads(done.stdout)

    def lines(self, word: str, pid: int | None = None) -> list[str]:
        found = [line.split() for line in self.ticks.read_text().splitlines()]
        return [f for f in found if f[0] == word and (pid is None or int(f[1]) == pid)]

    def server(self, port: int | None = None, **env: str) -> Process:
        """A real Hypercorn serving the app (scheduler started at import)."""
        port = port or free_port()
        return hypercorn("cli_app:app", port, cwd=APPS, **{**self.env, **env})

    def worker(self, *args: str, **env: str) -> Process:
        return Process(
            [QUART, "--app", "cli_app", "scheduler", "worker", *args],
            cwd=APPS,
            env={**self.env, **env},
        )


def wait(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


@pytest.fixture(scope="module")
def stored_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job store holding the app's jobs, written by a worker that ran briefly; and
    ``extra``, whose function exists only in that worker (``EXTRA=1``)."""
    setup = Setup(tmp_path_factory.mktemp("template"))
    with setup.worker(TICK="3600", EXTRA="1") as proc:
        proc.wait_for(lambda: any("worker running" in line for line in proc.stderr))
        proc.send(signal.SIGTERM)
        assert proc.wait_exit() == 0, proc.dump()
    return Path(setup.env["JOBSTORE"])


@pytest.fixture
def stored(setup: Setup, stored_template: Path) -> Setup:
    """``setup`` with its own copy of the template's job store (the jobs, never run)."""
    shutil.copyfile(stored_template, setup.env["JOBSTORE"])
    return setup


# ---------------------------------------------------------------------------- reading


def test_list_and_show_answer_what_the_rest_api_answers(setup: Setup) -> None:
    port = free_port()
    with setup.server(port, API="1", TICK="3600") as server:
        url = f"http://127.0.0.1:{port}"
        api_jobs = server.get(f"{url}/scheduler/jobs").json()

        listed = setup.json("list")
        assert listed == api_jobs
        assert {job["id"] for job in listed} == {"ticker", "daily", "slow", "failing"}
        assert setup.json("show", "daily") == server.get(f"{url}/scheduler/jobs/daily").json()
        assert list(setup.json("show", "daily"))[:6] == [
            "id",
            "name",
            "func",
            "args",
            "kwargs",
            "trigger",
        ]

        table = setup.cli("list")
        assert table.returncode == 0, table
        header, *rows = table.stdout.splitlines()
        assert header.split() == ["ID", "TRIGGER", "NEXT", "RUN", "STATE", "LAST", "RUN"]
        daily = next(row for row in rows if row.startswith("daily "))
        assert "at 06:30 every day, UTC" in daily  # the trigger in words (_describe)
        assert "06:30:00+00:00" in daily
        assert "scheduled" in daily

        shown = setup.cli("show", "daily")
        assert shown.returncode == 0, shown
        assert "func:" in shown.stdout and "cli_app:report" in shown.stdout
        assert "next run:" in shown.stdout


def test_unknown_id_exits_1_naming_the_id_on_stderr(stored: Setup) -> None:
    for command in (
        ["show", "nope"],
        ["show", "nope", "--json"],
        ["run", "nope"],
        ["pause", "nope"],
        ["remove", "nope"],
    ):
        done = stored.cli(*command)
        assert done.returncode == 1, (command, done)
        assert "'nope'" in done.stderr, (command, done.stderr)
        assert done.stdout == "", command


def test_usage_errors_exit_2(stored: Setup) -> None:
    for command in (
        ["next", "daily", "-n", "0"],
        ["next", "daily", "--after", "tomorrow"],
        ["history", "--outcome", "bogus"],
    ):
        done = stored.cli(*command)
        assert done.returncode == 2, (command, done)
        assert "Usage:" in done.stderr, command


def test_next_lists_fire_times_from_now_or_after_a_date(stored: Setup) -> None:
    after = stored.json("next", "daily", "-n", "3", "--after", "2030-01-01T00:00:00+00:00")
    assert after == {
        "id": "daily",
        "next_run_times": [
            "2030-01-01T06:30:00+00:00",
            "2030-01-02T06:30:00+00:00",
            "2030-01-03T06:30:00+00:00",
        ],
    }
    naive = stored.json("next", "daily", "-n", "1", "--after", "2030-01-01T07:00:00")
    assert naive["next_run_times"] == ["2030-01-02T06:30:00+00:00"]  # the scheduler's zone
    now = stored.json("next", "daily")
    assert len(now["next_run_times"]) == 5
    assert now["next_run_times"][0] == stored.json("show", "daily")["next_run_time"]
    human = stored.cli("next", "daily", "-n", "2", "--after", "2030-01-01T00:00:00Z")
    assert human.stdout.splitlines() == ["2030-01-01 06:30:00+00:00", "2030-01-02 06:30:00+00:00"]


def test_the_cli_never_writes_the_declared_jobs_over_the_stored_ones(stored: Setup) -> None:
    """Loading the app declares its config jobs; the store must keep its own: a paused job
    stays paused, an interval job keeps its start date and next run time."""
    ticker = stored.json("show", "ticker")
    assert stored.cli("pause", "daily").returncode == 0
    stored.cli("list")
    assert stored.json("show", "ticker") == ticker
    assert stored.json("show", "daily")["next_run_time"] is None


# ---------------------------------------------------------------------------- writing


def test_pause_from_the_cli_stops_a_running_server_firing_the_job(setup: Setup) -> None:
    with setup.server(TICK="0.2", HEARTBEAT="1"):
        wait(lambda: len(setup.lines("tick")) >= 2, "the server's ticks")

        paused = setup.cli("pause", "ticker")
        assert paused.returncode == 0, paused
        assert "Paused job 'ticker'" in paused.stdout
        ticks = len(setup.lines("tick"))
        beats = len(setup.lines("beat"))
        # The heartbeat job (every 0.1 s) shows the server awake and reading the store:
        # 20 beats later, at most a run already under way when the pause was written.
        wait(lambda: len(setup.lines("beat")) >= beats + 20, "the server kept running")
        assert len(setup.lines("tick")) <= ticks + 1
        assert setup.json("show", "ticker")["next_run_time"] is None

        resumed = setup.cli("resume", "ticker")
        assert resumed.returncode == 0, resumed
        wait(lambda: len(setup.lines("tick")) >= ticks + 3, "ticks again after resume")


def test_remove_from_the_cli_removes_the_job_from_the_store(stored: Setup) -> None:
    before = stored.json("show", "daily")
    removed = stored.json("remove", "daily")
    assert removed == before  # --json: the job as it was
    assert "daily" not in {job["id"] for job in stored.json("list")}
    again = stored.cli("remove", "daily")
    assert again.returncode == 1 and "'daily'" in again.stderr


def test_a_memory_store_shows_declared_jobs_and_refuses_changes(setup: Setup) -> None:
    listed = setup.json("list", JOBSTORE="")
    assert {job["id"] for job in listed} == {"ticker", "daily", "slow", "failing"}
    assert all(job["max_instances"] == 1 for job in listed)
    for command in (["pause", "ticker"], ["resume", "ticker"], ["remove", "ticker"]):
        done = setup.cli(*command, JOBSTORE="")
        assert done.returncode == 1, (command, done)
        assert "persistent job store" in done.stderr
        assert "'ticker'" in done.stderr


# ------------------------------------------------------------------------ run, history


def test_run_runs_the_job_here_records_it_and_fails_when_it_raises(stored: Setup) -> None:
    ok = stored.cli("run", "slow", SLOW_SECONDS="0.1")
    assert ok.returncode == 0, ok
    assert "Job 'slow' ran: success" in ok.stdout
    assert len(stored.lines("finished")) == 1

    failed = stored.cli("run", "failing", "--json")
    assert failed.returncode == 1
    assert "'failing' failed: RuntimeError: failing on purpose\\x1b[2J" in failed.stderr
    job = json.loads(failed.stdout)
    assert job["id"] == "failing"
    assert job["last_run"]["outcome"] == "error"
    # A run now does not touch the schedule.
    assert job["next_run_time"] == "2099-01-01T00:00:00+00:00"


def test_history_lists_runs_newest_first_filtered(stored: Setup) -> None:
    assert stored.cli("run", "slow", SLOW_SECONDS="0").returncode == 0
    assert stored.cli("run", "failing").returncode == 1

    runs = stored.json("history")
    assert [(run["job_id"], run["outcome"]) for run in runs][:2] == [
        ("failing", "error"),
        ("slow", "success"),
    ]
    errors = stored.json("history", "--outcome", "error")
    assert [run["job_id"] for run in errors] == ["failing"]
    assert errors[0]["error"] == "RuntimeError: failing on purpose\x1b[2J"
    assert stored.json("history", "slow") == [runs[1]]
    assert len(stored.json("history", "--limit", "1")) == 1

    table = stored.cli("history")
    assert table.stdout.splitlines()[0].split() == [
        "STARTED",
        "JOB",
        "OUTCOME",
        "DURATION",
        "ERROR",
    ]
    assert "RuntimeError: failing on purpose\\x1b[2J" in table.stdout  # escaped, not obeyed
    assert "\x1b" not in table.stdout


def test_history_works_while_the_server_records_runs(setup: Setup) -> None:
    with setup.server(TICK="0.2"):
        wait(lambda: len(setup.lines("tick")) >= 3, "ticks")
        wait(
            lambda: len(setup.json("history", "ticker", "--outcome", "success")) >= 2,
            "the server's runs in the history",
        )


# ---------------------------------------------------------------------------- check


def test_check_passes_on_a_good_setup(setup: Setup) -> None:
    done = setup.cli("check")
    assert done.returncode == 0, done
    assert done.stdout.startswith("OK: 4 declared job(s)")
    assert "SQLAlchemyJobStore" in done.stdout
    assert "coordination: file (leader: nobody)" in done.stdout  # nothing serves the app
    report = setup.json("check")
    assert report["ok"] is True and report["problems"] == []
    assert report["coordination"]["backend"] == "file"
    assert report["coordination"]["leader"] is None


def test_check_fails_on_a_function_that_cannot_be_imported(setup: Setup) -> None:
    done = setup.cli("check", BAD_FUNC="1")
    assert done.returncode == 1, done
    assert "cli_app:no_such_function" in done.stderr
    assert "Traceback" not in done.stderr
    report = setup.cli("check", "--json", BAD_FUNC="1")
    assert report.returncode == 1
    assert json.loads(report.stdout)["ok"] is False


def test_check_fails_on_a_stored_job_that_cannot_be_loaded(stored: Setup) -> None:
    done = stored.cli("check")
    assert done.returncode == 1, done
    assert "stored job 'extra' cannot be loaded" in done.stderr
    listed = stored.cli("list").stdout.splitlines()
    assert next(row for row in listed if row.startswith("extra ")).split()[-2] == "unloadable"
    assert stored.cli("check").returncode == 1  # checking removed nothing: still there
    assert stored.cli("check", EXTRA="1").returncode == 0  # its code is back


def test_check_fails_on_a_store_or_a_history_it_cannot_open(setup: Setup, tmp_path: Path) -> None:
    unreachable = setup.cli("check", JOBSTORE=str(tmp_path / "missing" / "jobs.sqlite"))
    assert unreachable.returncode == 1, unreachable
    assert "job stores cannot be opened" in unreachable.stderr

    (tmp_path / "garbage.sqlite").write_text("not a database")
    history = setup.cli("check", HISTORY=str(tmp_path / "garbage.sqlite"))
    assert history.returncode == 1, history
    assert "garbage.sqlite" in history.stderr


# ---------------------------------------------------------------------------- worker


def test_worker_runs_jobs_and_on_sigterm_lets_the_running_one_finish(setup: Setup) -> None:
    with setup.worker(SLOW_NOW="1", SLOW_SECONDS="6", TICK="0.2") as proc:
        wait(lambda: len(setup.lines("tick", proc.pid)) >= 2, "the worker's ticks")
        wait(lambda: setup.lines("started", proc.pid), "slow started")
        # Another process sees the run under way, through the shared history.
        listed = setup.cli("list").stdout.splitlines()
        assert next(row for row in listed if row.startswith("slow ")).split()[-4] == "running"
        assert not setup.lines("finished"), "slow ended before the test could stop the worker"
        proc.send(signal.SIGTERM)
        assert proc.wait_exit() == 0, proc.dump()
    assert len(setup.lines("finished", proc.pid)) == 1, setup.ticks.read_text()
    slow = setup.json("history", "slow")
    assert [run["outcome"] for run in slow] == ["success"]


def test_worker_starts_the_scheduler_the_app_did_not_start(setup: Setup) -> None:
    with setup.worker("--json", START="0", TICK="0.2") as proc:
        proc.wait_for(lambda: proc.stdout, what="the started line")
        started = json.loads(proc.stdout[0])
        assert started["event"] == "started" and started["jobs"] == 4
        assert started["role"] == "leader"
        wait(lambda: setup.lines("tick", proc.pid), "the worker's ticks")
        proc.send(signal.SIGINT)
        assert proc.wait_exit() == 0, proc.dump()
    assert json.loads(proc.stdout[-1]) == {"event": "stopped"}


# ------------------------------------------------------------- open_stores, in process


def _store_app(tmp_path: Path) -> Quart:
    app = Quart("cli_in_process")
    app.config["SCHEDULER_JOBSTORES"] = {
        "default": SQLAlchemyJobStore(url=f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    }
    app.config["SCHEDULER_HISTORY"] = False
    return app


async def test_open_stores_reads_and_writes_the_store_without_running(tmp_path: Path) -> None:
    serving_app = _store_app(tmp_path)
    server = APScheduler(app=serving_app)
    server.add_job("job", "jobfuncs:tick", args=["open_stores"], trigger="interval", hours=1)
    server.start()
    async with serving_app.test_app():
        server.pause_job("job")

    steering_app = _store_app(tmp_path)
    steering = APScheduler(app=steering_app)  # declares the job again, unpaused
    steering.add_job("job", "jobfuncs:tick", args=["open_stores"], trigger="interval", hours=1)
    async with steering.open_stores():
        assert not steering.running
        assert steering.get_job("job").next_run_time is None  # the store's, paused
        steering.resume_job("job")
        assert steering.get_job("job").next_run_time is not None
        with pytest.raises(JobLookupError):
            steering.pause_job("other")

    server.start()  # on this loop: at once
    try:
        with pytest.raises(SchedulerAlreadyRunningError):
            async with server.open_stores():
                pass
    finally:
        server.shutdown(wait=False)
        await server.scheduler.aclose()


async def test_open_stores_refuses_to_change_an_in_memory_job(app: Quart) -> None:
    scheduler = APScheduler(app=app)
    scheduler.add_job("job", "jobfuncs:tick", args=["memory"], trigger="interval", hours=1)
    async with scheduler.open_stores():
        assert [job.id for job in scheduler.get_jobs()] == ["job"]
        assert await scheduler.run_job("job") == "memory"
        with pytest.raises(JobStoreUnavailableError, match="in-memory job store 'default'"):
            scheduler.pause_job("job")
        with pytest.raises(JobStoreUnavailableError):
            scheduler.remove_job("job")
    # The declaration is kept for a later start.
    assert [job.id for job in scheduler.get_jobs()] == ["job"]


async def test_open_stores_in_a_serving_app_leaves_its_history_open(
    app: Quart, tmp_path: Path
) -> None:
    app.config["SCHEDULER_HISTORY"] = str(tmp_path / "history.sqlite")
    scheduler = APScheduler(app=app)  # not started: a web process leaving jobs to a worker
    async with app.test_app():
        async with scheduler.open_stores():
            assert (await scheduler.get_runs()).runs == []
        assert (await scheduler.get_runs()).runs == []  # still the serving's, still open
