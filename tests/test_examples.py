"""The programs in ``examples/`` run as documented: jobs fire and ``/`` answers.

Each runs as a real process, with ``EXAMPLE_INTERVAL`` shortening the jobs' interval,
and is stopped the way its user would stop it (Ctrl-C, or SIGTERM for Hypercorn).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from apps.harness import Process, hypercorn, python

from support import free_port

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def tutorial_output(proc: Process) -> Counter[str]:
    """How many ``3`` (job1) and ``tick`` lines examples/run.py printed.

    job1 prints from a thread and tick on the loop at the same moment, so one ``print``
    may land in the middle of the other's line ("3tick" then an empty line): count the
    tokens of the lines made of nothing else.
    """
    counts: Counter[str] = Counter()
    for line in proc.stdout:
        if line.replace("tick", "").strip("3") == "":
            counts["tick"] += line.count("tick")
            counts["3"] += line.replace("tick", "").count("3")
    return counts


def stop(proc: Process, sig: signal.Signals) -> None:
    proc.send(sig)
    assert proc.wait_exit() == 0, proc.dump()
    assert "Traceback" not in "\n".join(proc.stderr), proc.dump()


def test_run_py_with_app_run() -> None:
    # `python examples/run.py` from the repository root: "run:add" imports the file a
    # second time as module `run`; that copy's scheduler never serves, so never starts.
    port = free_port()
    with python("examples/run.py", cwd=REPO, PORT=str(port), EXAMPLE_INTERVAL="0.5") as proc:
        proc.wait_for(
            lambda: tutorial_output(proc)["3"] >= 2 and tutorial_output(proc)["tick"] >= 2,
            what="job1 and tick firing twice",
        )
        response = proc.get(f"http://127.0.0.1:{port}/")
        assert response.status_code == 200
        dashboard = f"http://127.0.0.1:{port}/scheduler/ui"
        assert response.json() == {
            "message": "The scheduler is running",
            "jobs": ["job1", "tick"],
            "dashboard": dashboard,
        }
        page = proc.get(dashboard)
        assert page.status_code == 200 and "<title>Scheduler</title>" in page.text
        stop(proc, signal.SIGINT)


def test_run_py_with_hypercorn() -> None:
    # `cd examples && hypercorn run:app`: the module is `run`, so "run:add" is itself.
    port = free_port()
    with hypercorn("run:app", port, cwd=EXAMPLES, EXAMPLE_INTERVAL="0.5") as proc:
        proc.wait_for(
            lambda: tutorial_output(proc)["3"] >= 2 and tutorial_output(proc)["tick"] >= 2,
            what="job1 and tick firing twice",
        )
        response = proc.get(f"http://127.0.0.1:{port}/")
        assert response.json()["jobs"] == ["job1", "tick"]
        stop(proc, signal.SIGTERM)


def test_run_py_under_four_workers_fires_each_job_once_per_period() -> None:
    # `hypercorn -w 4 run:app`, no config change: one worker leads and runs the jobs.
    port = free_port()
    with hypercorn("run:app", port, "-w", "4", cwd=EXAMPLES, EXAMPLE_INTERVAL="0.5") as proc:
        proc.wait_for(lambda: tutorial_output(proc)["3"] >= 1, what="job1 firing")
        started = time.monotonic()
        before = tutorial_output(proc)
        while time.monotonic() - started < 4:
            time.sleep(0.1)
        after = tutorial_output(proc)
        # Each request reaches one worker, chosen by the kernel: ask until the leader
        # answers (at 3 standbys in 4, eight requests all miss it one time in ten).
        roles: set[str] = set()
        for _ in range(100):
            roles.add(proc.get(f"http://127.0.0.1:{port}/scheduler").json()["role"])
            if roles == {"leader", "standby"}:
                break
        stop(proc, signal.SIGTERM)
    # 4 s at one fire per 0.5 s: 8 fires of each job, give or take one at each end
    # (four workers each running them would print about 32).
    for job in ("3", "tick"):
        fired = after[job] - before[job]
        assert 7 <= fired <= 10, (job, fired, proc.dump())
    assert roles == {"leader", "standby"}


def test_decorators_py() -> None:
    port = free_port()
    with python(
        "examples/decorators.py", cwd=REPO, PORT=str(port), EXAMPLE_INTERVAL="0.5"
    ) as proc:
        proc.wait_for(
            lambda: proc.stdout.count("Job 1 executed") >= 2, what="do_job_1 firing twice"
        )
        body = proc.get(f"http://127.0.0.1:{port}/").json()
        stop(proc, signal.SIGINT)

    assert body["message"] == "The scheduler is running"
    next_runs = {job: datetime.fromisoformat(when) for job, when in body["jobs"].items()}
    assert set(next_runs) == {"do_job_1", "do_job_2", "do_job_3"}
    # SCHEDULER_TIMEZONE = "Asia/Shanghai": every trigger runs on Shanghai time.
    assert {str(when.utcoffset()) for when in next_runs.values()} == {"8:00:00"}
    assert next_runs["do_job_2"].second == 0  # minute="*"
    sunday = next_runs["do_job_3"]  # day_of_week="sun": next Sunday, midnight in Shanghai
    assert (sunday.weekday(), sunday.hour, sunday.minute) == (6, 0, 0)


def test_factory_py_with_hypercorn() -> None:
    # Hypercorn evaluates `create_app()` after the colon: the factory pattern.
    port = free_port()
    with hypercorn(
        "examples.factory:create_app()", port, cwd=REPO, EXAMPLE_INTERVAL="0.5"
    ) as proc:
        proc.wait_for(
            lambda: (
                proc.stdout.count("greet: hello from the factory") >= 2
                and proc.stdout.count("count_jobs: 2 jobs in examples.factory") >= 2
            ),
            what="greet and count_jobs firing twice, with current_app",
        )
        response = proc.get(f"http://127.0.0.1:{port}/")
        body = response.json()
        assert body["message"] == "The scheduler is running"
        # By next run time: both interval jobs are on one grid, so the same time.
        assert sorted(body["jobs"]) == ["count_jobs", "greet"]
        stop(proc, signal.SIGTERM)
