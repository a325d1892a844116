"""Failures, misses and successes reach the quart_sched logger, the signals and listeners."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED
from quart import Quart

from quart_sched import APScheduler
from quart_sched.signals import job_executed, job_failed, job_missed

from support import wait_until


class Boom(Exception):
    pass


def secret_job(password: str) -> None:
    raise Boom("exploded")


async def test_failure_is_logged_signalled_and_dispatched(
    app: Quart, scheduler: APScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[dict[str, Any]] = []
    listener_events: list[Any] = []

    async def on_failure(sender: Quart, **kw: Any) -> None:
        failures.append({"sender": sender, **kw})

    scheduler.add_listener(listener_events.append, EVENT_JOB_ERROR)
    scheduler.add_job("fails", secret_job, trigger="date", kwargs={"password": "hunter2"})
    with job_failed.connected_to(on_failure), caplog.at_level(logging.INFO, "quart_sched"):
        scheduler.start()
        async with app.test_app():
            await wait_until(lambda: failures and listener_events)
    (failure,) = failures
    assert failure["sender"] is app
    assert failure["job_id"] == "fails"
    assert isinstance(failure["exception"], Boom)
    assert "secret_job" in failure["traceback"]
    assert isinstance(failure["scheduled_run_time"], datetime)
    assert listener_events[0].job_id == "fails"
    assert isinstance(listener_events[0].exception, Boom)

    records = [r for r in caplog.records if r.name == "quart_sched" and r.levelno >= logging.ERROR]
    assert len(records) == 1
    assert "'fails'" in records[0].getMessage()
    assert "Boom: exploded" in records[0].getMessage()
    assert "hunter2" not in caplog.text  # job arguments never reach the log


async def test_success_signal_carries_the_return_value(app: Quart, scheduler: APScheduler) -> None:
    results: list[Any] = []

    def on_success(sender: Quart, job_id: str, retval: Any, **kw: Any) -> None:
        results.append((job_id, retval))

    async def answer() -> int:
        return 42

    scheduler.add_job("answer", answer, trigger="date")
    with job_executed.connected_to(on_success):
        scheduler.start()
        async with app.test_app():
            await wait_until(lambda: results)
    assert results == [("answer", 42)]


async def test_missed_run_is_logged_and_signalled(
    app: Quart, scheduler: APScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    missed: list[str] = []
    listener_events: list[Any] = []
    ran: list[int] = []

    def on_missed(sender: Quart, job_id: str, **kw: Any) -> None:
        missed.append(job_id)

    scheduler.add_listener(listener_events.append, EVENT_JOB_MISSED)
    scheduler.add_job(
        "too-late",
        lambda: ran.append(1),
        trigger="date",
        run_date=datetime.now(timezone.utc) - timedelta(seconds=30),
        misfire_grace_time=None,
    )
    scheduler.scheduler.modify_job("too-late", misfire_grace_time=1)
    with job_missed.connected_to(on_missed), caplog.at_level(logging.WARNING, "quart_sched"):
        scheduler.start()
        async with app.test_app():
            await wait_until(lambda: missed and listener_events)
    assert missed == ["too-late"]
    assert ran == []
    assert "'too-late'" in caplog.text and "missed" in caplog.text


async def test_a_failing_receiver_does_not_break_the_job(
    app: Quart, scheduler: APScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    def bad_receiver(sender: Quart, **kw: Any) -> None:
        raise RuntimeError("receiver bug")

    scheduler.add_job("tick", lambda: runs.append(1), trigger="interval", seconds=0.05)
    with job_executed.connected_to(bad_receiver), caplog.at_level(logging.ERROR, "quart_sched"):
        scheduler.start()
        async with app.test_app():
            await wait_until(lambda: len(runs) >= 2)
    assert "receiver" in caplog.text
