"""Deployments, with real servers in real processes.

* ``hypercorn module:app`` with ``scheduler.start()`` at import time: jobs fire, once per
  fire, from the one worker process (also across a ``hypercorn --reload``);
* stopping (SIGTERM to Hypercorn, Ctrl-C to ``app.run()``) lets running jobs finish, and
  ``SCHEDULER_SHUTDOWN_TIMEOUT`` bounds how long that takes;
* ``app.run(debug=True)``: Quart's reloader restarts the process in place, and one
  scheduler fires before and after the reload.

The apps are in ``tests/apps``; they write one line per event (see their docstrings).
"""

from __future__ import annotations

import re
import shutil
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from apps.harness import Process, hypercorn, python

from support import free_port

APPS = Path(__file__).parent / "apps"

_IMPORTED = re.compile(r"^IMPORTED pid=(\d+) copy=(\w+)$")
_FIRE = re.compile(r"^FIRE (\w+) pid=(\d+) copy=(\w+) n=(\d+)$")
_RAN = re.compile(r"^RAN (\w+) (\S+)$")


@dataclass(frozen=True)
class Imported:
    pid: int
    copy: str
    line: int


@dataclass(frozen=True)
class Fire:
    job: str
    pid: int
    copy: str
    n: int
    line: int


def imports(proc: Process) -> list[Imported]:
    return [
        Imported(int(m[1]), m[2], i)
        for i, line in enumerate(proc.stdout)
        if (m := _IMPORTED.match(line))
    ]


def fires(proc: Process, job: str | None = None) -> list[Fire]:
    found = [
        Fire(m[1], int(m[2]), m[3], int(m[4]), i)
        for i, line in enumerate(proc.stdout)
        if (m := _FIRE.match(line))
    ]
    return [fire for fire in found if job is None or fire.job == job]


def runs(proc: Process) -> list[tuple[str, str]]:
    """(job id, scheduled run time) of every executed run, from the listener's lines."""
    return [(m[1], m[2]) for line in proc.stdout if (m := _RAN.match(line))]


def assert_each_fire_ran_once(proc: Process) -> None:
    """No scheduled run time ran twice, and each module copy counted its fires 1, 2, 3..."""
    ran = runs(proc)
    repeated = [run for run, count in Counter(ran).items() if count > 1]
    assert not repeated, f"runs executed more than once: {repeated}\n{proc.dump()}"
    by_copy: dict[tuple[str, str], list[int]] = {}
    for fire in fires(proc):
        by_copy.setdefault((fire.job, fire.copy), []).append(fire.n)
    for (job, copy), counts in by_copy.items():
        assert counts == list(range(1, len(counts) + 1)), (job, copy, counts)
    # After a graceful stop, every fire also reached the listener.
    assert Counter(job for job, _ in ran) == Counter(fire.job for fire in fires(proc))


def assert_clean_stderr(proc: Process, *, tracebacks: bool = False) -> None:
    """No job failed, no scheduler refused to start and, unless allowed, no traceback.

    (Quart's reloader cancels open connections' tasks, which asyncio logs with a traceback.)
    """
    text = "\n".join(proc.stderr)
    for bad in ("ERROR:quart_sched", "failed", "not starting", "already running"):
        assert bad not in text, f"{bad!r} on stderr\n{proc.dump()}"
    if not tracebacks:
        assert "Traceback" not in text, proc.dump()


def stop(proc: Process, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop as a supervisor (SIGTERM) or a terminal (SIGINT) would; it must exit 0."""
    proc.send(sig)
    assert proc.wait_exit() == 0, proc.dump()


# ------------------------------------------------------------------ start at import time


def test_hypercorn_module_app_fires_each_job_once_from_the_worker() -> None:
    port = free_port()
    with hypercorn("import_time:app", port, cwd=APPS) as proc:
        proc.wait_for(
            lambda: all(len(fires(proc, job)) >= 3 for job in ("async_tick", "plain_tick")),
            what="3 fires of each job",
        )
        response = proc.get(f"http://127.0.0.1:{port}/")
        assert response.json() == {"running": True, "jobs": ["async_tick", "plain_tick"]}
        stop(proc)

    # Hypercorn's parent process spawns one worker; only the worker imports the app.
    (imported,) = imports(proc)
    assert imported.pid != proc.pid
    assert {(f.pid, f.copy) for f in fires(proc)} == {(imported.pid, imported.copy)}
    assert_each_fire_ran_once(proc)
    assert "Scheduler shut down" in "\n".join(proc.stderr)
    assert_clean_stderr(proc)


def test_hypercorn_reload_fires_from_one_worker_at_a_time(tmp_path: Path) -> None:
    shutil.copy(APPS / "import_time.py", tmp_path)
    port = free_port()
    with hypercorn("import_time:app", port, "--reload", cwd=tmp_path) as proc:
        proc.wait_for(lambda: len(fires(proc, "async_tick")) >= 2, what="2 fires")
        edited = len(proc.stdout)
        with (tmp_path / "import_time.py").open("a") as source:
            source.write("# edited: hypercorn --reload restarts the worker\n")
        proc.wait_for(lambda: fired_since_import(proc, after=edited), what="a new worker firing")
        stop(proc)

    # --reload imports the app in the parent too, but that copy never serves or fires.
    parent, *workers = imports(proc)
    assert parent.pid == proc.pid
    assert len(workers) >= 2, proc.dump()  # more if a watched file changed meanwhile
    assert_one_copy_fires_at_a_time(proc, workers)
    assert_each_fire_ran_once(proc)
    assert_clean_stderr(proc)


def fired_since_import(proc: Process, after: int) -> bool:
    """A copy imported at line ``after`` or later (a reload) has fired twice since."""
    newer = [i for i in imports(proc) if i.line >= after]
    return bool(newer) and sum(f.copy == newer[-1].copy for f in fires(proc)) >= 2


def assert_one_copy_fires_at_a_time(proc: Process, copies: list[Imported]) -> None:
    """Each fire comes from the latest copy imported before it, in that copy's process."""
    copies = sorted(copies, key=lambda i: i.line)
    for fire in fires(proc):
        latest = [i for i in copies if i.line < fire.line][-1]
        assert (fire.pid, fire.copy) == (latest.pid, latest.copy), (fire, proc.dump())


# ---------------------------------------------------------------------- graceful stops


def _wait_started(proc: Process, jobs: tuple[str, ...]) -> None:
    proc.wait_for(
        lambda: all(f"started {job}" in proc.stdout for job in jobs), what=f"{jobs} started"
    )
    # Else the test would prove nothing: the jobs must still be running when we stop.
    assert not any(line.startswith("finished") for line in proc.stdout), proc.dump()


def test_sigterm_to_hypercorn_lets_running_jobs_finish() -> None:
    jobs = ("slow_async", "slow_plain")
    with hypercorn("slow_job:app", free_port(), cwd=APPS, JOB_SECONDS="1.5") as proc:
        _wait_started(proc, jobs)
        stop(proc, signal.SIGTERM)

    assert all(f"finished {job}" in proc.stdout for job in jobs), proc.dump()
    assert "interrupted" not in "\n".join(proc.stderr)
    assert_clean_stderr(proc)


def test_shutdown_timeout_interrupts_a_long_job_and_logs_it() -> None:
    env = {"JOB_SECONDS": "30", "JOBS": "slow_async", "SCHEDULER_SHUTDOWN_TIMEOUT": "0.5"}
    with hypercorn("slow_job:app", free_port(), cwd=APPS, **env) as proc:
        _wait_started(proc, ("slow_async",))
        proc.send(signal.SIGTERM)
        # Far less than the job's 30 s: the timeout, then the cancellation, bound the stop.
        assert proc.wait_exit(timeout=10) == 0, proc.dump()

    assert "finished slow_async" not in proc.stdout
    (interrupted,) = [line for line in proc.stderr if "interrupted" in line]
    assert interrupted.startswith("WARNING:quart_sched:Job 'slow_async' ")
    assert_clean_stderr(proc)  # an interruption is not reported as an error


def test_ctrl_c_to_app_run_lets_running_jobs_finish() -> None:
    jobs = ("slow_async", "slow_plain")
    port = str(free_port())
    with python("slow_job.py", cwd=APPS, PORT=port, JOB_SECONDS="1.5") as proc:
        _wait_started(proc, jobs)
        stop(proc, signal.SIGINT)

    assert all(f"finished {job}" in proc.stdout for job in jobs), proc.dump()
    assert "interrupted" not in "\n".join(proc.stderr)
    assert_clean_stderr(proc)


def test_sigterm_to_the_process_group_of_a_single_process_hypercorn() -> None:
    # systemd (KillMode=control-group) signals every process of the service. Hypercorn's
    # default worker leaves SIGTERM to its parent and dies at once on it; `--workers 0`
    # serves in one process that handles SIGTERM itself, so running jobs finish.
    jobs = ("slow_async", "slow_plain")
    with hypercorn("slow_job:app", free_port(), "--workers", "0", cwd=APPS) as proc:
        _wait_started(proc, jobs)
        proc.send_to_group(signal.SIGTERM)
        assert proc.wait_exit() == 0, proc.dump()

    assert all(f"finished {job}" in proc.stdout for job in jobs), proc.dump()
    assert_clean_stderr(proc)


# ---------------------------------------------------------------- app.run(debug=True)


def test_debug_reloader_restarts_in_place_with_one_scheduler(tmp_path: Path) -> None:
    # Quart's reloader polls the modules' files every second, cancels every task on a
    # change (after_serving does not run) and exec()s the same command in the same process.
    shutil.copy(APPS / "reload_app.py", tmp_path)
    port = free_port()
    with python("reload_app.py", cwd=tmp_path, PORT=str(port)) as proc:
        proc.wait_for(lambda: len(fires(proc)) >= 2, what="2 fires")
        (first,) = imports(proc)
        assert proc.get(f"http://127.0.0.1:{port}/").json()["copy"] == first.copy

        edited = len(proc.stdout)
        with (tmp_path / "reload_app.py").open("a") as source:
            source.write("# edited: Quart's reloader restarts the app\n")
        proc.wait_for(lambda: fired_since_import(proc, after=edited), what="fires after reload")
        reloaded = {i.copy for i in imports(proc) if i.line >= edited}
        answer = proc.get(f"http://127.0.0.1:{port}/").json()
        assert answer["running"] is True
        assert answer["copy"] in reloaded
        stop(proc, signal.SIGINT)

    copies = imports(proc)
    assert len(copies) >= 2, proc.dump()  # more if a watched file changed meanwhile
    assert {i.pid for i in copies} == {proc.pid}  # restarted in place
    assert_one_copy_fires_at_a_time(proc, copies)
    assert_each_fire_ran_once(proc)
    assert_clean_stderr(proc, tracebacks=True)
