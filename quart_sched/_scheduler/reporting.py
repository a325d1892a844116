"""Reporting: every run's outcome to the run history, the blinker signals and the logger."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .. import signals
from .._history import run_record

if TYPE_CHECKING:
    from blinker import NamedSignal
    from quart import Quart

    from .._history import RunRecorder

logger = logging.getLogger("quart_sched")

#: How long cancelled jobs get to record their interruption at shutdown.
CANCEL_GRACE = 1.0


class Reporting(AsyncIOScheduler):  # type: ignore[misc]
    """The scheduler's reporting: signals sent and runs recorded in the history."""

    app: Quart | None = None
    #: Where runs are recorded; set by the extension (None: not recorded).
    history: RunRecorder | None = None
    _reports: set[asyncio.Task[None]]

    async def report(
        self, signal: NamedSignal, job_id: str, run_time: datetime, **extra: Any
    ) -> None:
        """Send a run signal; a failing receiver is logged, never fatal to the job."""
        if not signal.receivers:
            return
        sender: Any = self.app if self.app is not None else self
        try:
            if self.app is not None:
                await signal.send_async(
                    sender,
                    _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
                    job_id=job_id,
                    scheduled_run_time=run_time,
                    **extra,
                )
            else:
                signal.send(sender, job_id=job_id, scheduled_run_time=run_time, **extra)
        except Exception:
            logger.exception("A receiver of %s failed for job %r", signal.name, job_id)

    def _report_soon(self, signal: NamedSignal, job_id: str, run_time: datetime) -> None:
        history = self.history
        if (signal.receivers or history is not None) and self._eventloop is not None:
            task = self._eventloop.create_task(self._report_skip(signal, job_id, run_time))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)

    async def _report_skip(self, signal: NamedSignal, job_id: str, run_time: datetime) -> None:
        await self.report(signal, job_id, run_time)
        await self.record_not_run(job_id, run_time, "skipped")

    async def record_finished(
        self, run_id: str | None, job_id: str, run_time: datetime, outcome: str, **error: Any
    ) -> None:
        """Record how a run ended in the history, and send ``run_finished``."""
        if run_id is None or self.history is None:
            return
        row = self.history.finished(run_id, outcome, **error)
        if signals.run_finished.receivers:
            await self.report(signals.run_finished, job_id, run_time, run=run_record(row))

    async def record_not_run(self, job_id: str, run_time: datetime, outcome: str) -> None:
        """Record a run that never started (missed, skipped), and send ``run_finished``."""
        if self.history is None:
            return
        row = self.history.not_run(job_id, run_time, outcome)
        if signals.run_finished.receivers:
            await self.report(signals.run_finished, job_id, run_time, run=run_record(row))
