"""Leadership: a started scheduler leads or stands by, as its coordinator decides.

The coordinator (``_coordination``) is the wake-up loop's fire gate: only a leader takes
due fires from the stores, and only the fires the ledger grants it run. A standby keeps
its stores open and serves the API; a change it makes wakes the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.triggers.interval import IntervalTrigger

from .. import signals
from .._coordination import FILE, OFF, CoordinationPlan, plan_coordination
from .._coordination.backend import Backend, Lease, Member
from .._coordination.coordinator import Coordinator, Hooks
from .._coordination.solo import SoloLock
from .._gate import OPEN_GATE, Fire, FireGate
from ..errors import ConfigurationError, JobStoreUnavailableError

logger = logging.getLogger("quart_sched")

_RAN = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def grid_anchor(start: datetime, interval: timedelta) -> datetime:
    """The point at or before ``start`` of the grid of ``interval`` steps from
    1970-01-01 UTC. Processes that start at different moments, each with a start of "now
    plus one interval", all fire on this one grid; the first fire stays at most one
    interval away."""
    step = interval // _MICROSECOND
    if step <= 0:
        return start
    since = (start - _EPOCH) // _MICROSECOND
    return (_EPOCH + (since // step) * step * _MICROSECOND).astimezone(start.tzinfo)


class Leadership(AsyncIOScheduler):  # type: ignore[misc]
    """Starts and stops the coordinator with the scheduler; what the rest asks of it."""

    #: SCHEDULER_COORDINATION, set by the extension; None: no coordination at all (a
    #: scheduler used without the extension).
    coordination_setting: Any = None
    #: The app's import name and instance folder, as coordination keys and files use them.
    coordination_app: tuple[str, str] = ("", ".")
    #: The backend the setting chose at the last start.
    coordination: CoordinationPlan | None = None
    #: Job id globs whose interrupted runs a new leader runs again.
    rerun_interrupted: tuple[str, ...] = ()
    #: This process's host name, as the leader's identity shows it.
    host_name: str = ""
    gate: FireGate = OPEN_GATE
    _coordinator: Coordinator | None = None
    _coordinating: asyncio.Task[None] | None = None
    _solo: SoloLock | None = None
    _leadership_tasks: set[asyncio.Task[Any]]
    #: Interval triggers built with no start_date before the start (by id).
    _default_starts: dict[int, IntervalTrigger]

    @property
    def coordinated(self) -> bool:
        """True while a coordinator decides whether this process runs jobs."""
        return self._coordinator is not None

    @property
    def is_leader(self) -> bool:
        """Whether this process runs the jobs now: the leader, or the only process
        (coordination off) while the scheduler runs."""
        if self.state == STATE_STOPPED:
            return False
        return self._coordinator is None or self._coordinator.leading

    async def leadership_info(self) -> dict[str, Any]:
        """``role``, ``leader`` and ``coordination`` as ``GET <prefix>`` shows them."""
        coordinator = self._coordinator
        plan = self.coordination
        info: dict[str, Any] = {
            "role": None if self.state == STATE_STOPPED else "leader",
            "leader": None,
            "coordination": None
            if plan is None or plan.kind == OFF
            else {"backend": plan.kind, "location": plan.shown_location, "error": None},
        }
        if coordinator is not None:
            info["role"] = coordinator.role
            lease = await coordinator.current_leader()
            info["leader"] = None if lease is None else lease.as_json()
            info["coordination"]["error"] = coordinator.error
        return info

    # start and stop --------------------------------------------------------------------

    def plan_coordination(self) -> CoordinationPlan | None:
        """The backend SCHEDULER_COORDINATION chooses with the job stores as they are
        now; None without the extension's setting."""
        if self.coordination_setting is None:
            return None
        name, instance_path = self.coordination_app
        return plan_coordination(
            self.coordination_setting,
            app_name=name,
            instance_path=instance_path,
            stores=dict(self._jobstores),
        )

    async def read_leader(self) -> Lease | None:
        """The current leader as the backend has it, from any process (the CLI's check).

        :raises CoordinationUnavailableError: if the backend cannot be reached
        """
        plan = self.plan_coordination()
        if plan is None or plan.kind == OFF:
            return None
        backend = plan.backend()
        try:
            await backend.open()
            return await backend.leader()
        finally:
            await backend.close()

    def _plan_start(self) -> None:
        """At start, before the pending jobs go to their stores: the backend, and interval
        jobs of every process on one grid (see :func:`grid_anchor`)."""
        plan = self.coordination = self.plan_coordination()
        defaults, self._default_starts = self._default_starts, {}
        if plan is None or plan.kind == OFF:
            return
        for job, _alias, _replace in self._pending_jobs:
            if id(job.trigger) in defaults:
                # A new trigger, not this one changed: what was shown of it stays true.
                anchored = copy.copy(job.trigger)
                _anchor(anchored)
                job._modify(trigger=anchored)

    def note_trigger(self, trigger: Any, trigger_args: Mapping[str, Any]) -> None:
        """A trigger was built from its name: an interval trigger given no ``start_date``
        starts "now" in each process, so the ledger could not tell one process's fires
        from another's; it goes on the shared grid once coordination is on."""
        if isinstance(trigger, IntervalTrigger) and "start_date" not in trigger_args:
            if self._coordinator is not None:
                _anchor(trigger)
            else:  # anchored at start if coordination is on (held: ids stay unique)
                self._default_starts[id(trigger)] = trigger

    def _start_coordination(self, loop: asyncio.AbstractEventLoop) -> None:
        """At start: a coordinator (its first attempt to lead runs at once, as a task)."""
        self._leadership_tasks = set()
        plan = self.coordination
        if plan is None:
            return
        if plan.kind == OFF:
            self._solo = SoloLock(plan.location, plan.key)
            if not self._solo.acquire():
                logger.warning(
                    "Another process runs this app's jobs too, and SCHEDULER_COORDINATION is "
                    "False: every job runs in each of them. Remove that setting to have one "
                    "process run them."
                )
            return
        backend = self._backend(plan)
        member = Member(self.host_name, os.getpid(), uuid.uuid4().hex)
        coordinator = Coordinator(
            backend,
            member,
            Hooks(
                wake=self.wakeup,
                changed=self._leadership_changed,
                rerun=self._rerun,
                job_ids=self._job_ids,
            ),
            rerun_patterns=self.rerun_interrupted,
        )
        self._coordinator = coordinator
        self.gate = coordinator
        self._coordinating = loop.create_task(coordinator.start())

    def _backend(self, plan: CoordinationPlan) -> Backend:
        """The plan's backend. "auto" on a store whose client library for coordination is
        missing falls back to the file backend (one host) with a warning, rather than
        stopping an app that ran before; an explicit choice raises."""
        try:
            return plan.backend()
        except ImportError as exc:
            hint = f"pip install 'quart-sched[{plan.kind}]'"
            if self.coordination_setting != "auto":
                raise ConfigurationError(
                    f"SCHEDULER_COORDINATION uses {plan.kind}, which needs {hint} ({exc})"
                ) from exc
            logger.warning(
                "SCHEDULER_COORDINATION='auto' chose %s (the job store's), but %s; only the "
                "processes of this host are coordinated, through files, until you %s",
                plan.kind,
                exc,
                hint,
            )
            self.coordination = replace(plan, kind=FILE, location=self.coordination_app[1])
            return self.coordination.backend()

    async def coordination_started(self) -> None:
        """Wait until the coordinator's first attempt to lead is over."""
        task = self._coordinating
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    def _detach_coordination(self) -> Coordinator | None:
        """At stop: nothing is taken or admitted any more; the coordinator to stop."""
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None and self.gate is coordinator:
            self.gate = OPEN_GATE
        solo, self._solo = self._solo, None
        if solo is not None:
            solo.release()
        return coordinator

    async def _stop_coordination(self, coordinator: Coordinator | None) -> None:
        if coordinator is None:
            return
        starting, self._coordinating = self._coordinating, None
        if starting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        try:
            await coordinator.stop()
        except Exception:
            logger.exception("Stopping the coordination failed")

    # what the coordinator calls ----------------------------------------------------------

    def _leadership_changed(self, leading: bool, lease: Lease) -> None:
        if self.history is not None:
            self.history.epoch = lease.epoch if leading else None
        signal = signals.became_leader if leading else signals.lost_leadership
        if signal.receivers:
            self._spawn(self._send_leadership(signal, lease))

    async def _send_leadership(self, signal: Any, lease: Lease) -> None:
        sender: Any = self.app if self.app is not None else self
        try:
            if self.app is not None:
                await signal.send_async(
                    sender, _sync_wrapper=self.app.ensure_async, leader=lease.as_json()
                )
            else:
                signal.send(sender, leader=lease.as_json())
        except Exception:
            logger.exception("A receiver of %s failed", signal.name)

    async def _job_ids(self) -> list[str]:
        jobs = await asyncio.to_thread(self.get_jobs)
        return [job.id for job in jobs]

    async def _rerun(self, fires: list[Fire]) -> None:
        """Submit again runs lost with the previous leader (before the first pass, which
        would remove a date job whose fire it finds already claimed)."""
        for fire in fires:
            job = await asyncio.to_thread(self.get_job, fire.job_id)
            if job is None or self.state == STATE_STOPPED:
                continue
            try:
                self._lookup_executor(job.executor).submit_job(job, [fire.run_time])
            except Exception:
                logger.exception("Running again the interrupted run of job %r failed", job.id)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._leadership_tasks.add(task)
        task.add_done_callback(self._leadership_tasks.discard)

    def listened(self) -> bool:
        """Whether anything hears the job events (a listener, or the coordinator tracking
        runs): a burst builds none when nothing does."""
        coordinator = self._coordinator
        return bool(self._listeners) or (coordinator is not None and coordinator.tracks_runs())

    def _dispatch_event(self, event: Any) -> None:
        coordinator = self._coordinator
        if coordinator is not None and event.code & _RAN and coordinator.tracks_runs():
            coordinator.ran(Fire(event.job_id, event.scheduled_run_time))
        super()._dispatch_event(event)

    # standbys ------------------------------------------------------------------------------

    async def refuse_standby_write(self, jobstore: str | None) -> None:
        """A standby cannot change jobs of an in-memory store: the leader holds its own.
        (Asked once the coordinator knows: a scheduler just started may lead.)

        :raises JobStoreUnavailableError: on a standby, for an in-memory store
        """
        await self.coordination_started()
        coordinator = self._coordinator
        if coordinator is None or coordinator.leading:
            return
        store = self._jobstores.get(jobstore or "default")
        if isinstance(store, MemoryJobStore):
            raise JobStoreUnavailableError(
                "This process is a standby and the jobs are in an in-memory job store, which "
                "lives in the leader's process: a change made here would not reach it. "
                "Configure a shared job store (SCHEDULER_JOBSTORES) to change jobs from any "
                "process, or send this request to the leader (GET <prefix> names it)."
            )


def _anchor(trigger: IntervalTrigger) -> None:
    trigger.start_date = grid_anchor(trigger.start_date, trigger.interval)
