"""``current_run``: which run a job's code is part of, inside the job (both kinds)."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from datetime import datetime


class RunInfo:
    """The run under way: its job, the time it was scheduled for, and its run id (the
    run history's, or a random one when history is off, made when first asked for)."""

    __slots__ = ("_run_id", "job_id", "scheduled_run_time")

    def __init__(self, job_id: str, scheduled_run_time: datetime, run_id: str | None) -> None:
        self.job_id = job_id
        self.scheduled_run_time = scheduled_run_time
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        # Random ids cost a system call each: most runs never ask for theirs.
        if self._run_id is None:
            self._run_id = uuid.uuid4().hex
        return self._run_id

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunInfo):
            return NotImplemented
        return (self.job_id, self.scheduled_run_time, self.run_id) == (
            other.job_id,
            other.scheduled_run_time,
            other.run_id,
        )

    def __hash__(self) -> int:
        return hash((self.job_id, self.scheduled_run_time, self.run_id))

    def __repr__(self) -> str:
        return (
            f"RunInfo(job_id={self.job_id!r}, scheduled_run_time={self.scheduled_run_time!r}, "
            f"run_id={self.run_id!r})"
        )


_run: ContextVar[RunInfo] = ContextVar("quart_sched.current_run")


def set_current_run(job_id: str, scheduled_run_time: datetime, run_id: str | None) -> None:
    """Called by the executor in the run's own context, before the job's code."""
    _run.set(RunInfo(job_id, scheduled_run_time, run_id))


class CurrentRun:
    """The run under way, inside a job::

        from quart_sched import current_run

        async def send_invoices():
            key = f"{current_run.job_id}@{current_run.scheduled_run_time.isoformat()}"
            await billing.send_once(idempotency_key=key)

    The scheduled run time is the same for every process that could run this fire, so it
    makes an idempotency key for the job's own side effects. Outside a run, reading an
    attribute raises ``RuntimeError``.
    """

    __slots__ = ()

    def _get(self) -> RunInfo:
        try:
            return _run.get()
        except LookupError:
            raise RuntimeError(
                "current_run is only set inside a job run (a scheduled or manual run)"
            ) from None

    @property
    def job_id(self) -> str:
        return self._get().job_id

    @property
    def scheduled_run_time(self) -> datetime:
        return self._get().scheduled_run_time

    @property
    def run_id(self) -> str:
        return self._get().run_id

    def __bool__(self) -> bool:
        """True inside a run."""
        return _run.get(None) is not None

    def __repr__(self) -> str:
        info = _run.get(None)
        return f"<current_run {info!r}>" if info else "<current_run: no run>"


current_run = CurrentRun()
