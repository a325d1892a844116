"""The wake-up loop: one pass per wake-up takes the due fires from each job store (off the
loop for a persistent store), records them, asks the fire gate, and submits the runs."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.base import MaxInstancesReachedError
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import (
    STATE_RUNNING,
    STATE_STOPPED,
    TIMEOUT_MAX,
)
from apscheduler.triggers.base import BaseTrigger

from .. import signals
from .._gate import OPEN_GATE, Fire, FireGate
from .._stores import DueWrites, due_jobs, is_persistent, upcoming_jobs
from .unloadable import UnloadableJob

logger = logging.getLogger("quart_sched")

#: Most fires one pass submits before it lets the loop run other work (see _submit_fires).
SUBMIT_SLICE = 50
#: Most due jobs of an in-memory store one pass takes at a time (see _process_due).
TAKE_SLICE = 250
#: Jobs whose fires a large due batch claims in its first round trip to the fire ledger;
#: each following claim asks for twice as many, up to MAX_CLAIM_SLICE (see _dispatch).
CLAIM_SLICE = 100
MAX_CLAIM_SLICE = 1600
#: How soon the next fire of an in-memory job must be for its claim to be made ahead: the
#: fires due within twice this are handed to the gate together (see _claim_ahead). The
#: scheduler's ``claim_ahead`` (SCHEDULER_CLAIM_AHEAD); zero: no claim is made ahead.
CLAIM_AHEAD = timedelta(milliseconds=50)
#: Most fires one look claims ahead; past it, the rest are claimed when due.
MAX_CLAIM_AHEAD = 4 * MAX_CLAIM_SLICE


def on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the caller runs on ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class WakeupLoop(AsyncIOScheduler):  # type: ignore[misc]
    """The scheduler's wake-up passes (they replace APScheduler's ``_process_jobs``)."""

    #: Asked before any run starts which due fires may run here (see ``_gate``).
    gate: FireGate = OPEN_GATE
    _pass: asyncio.Task[None] | None
    _pass_again: bool
    _failing_stores: dict[str, str]
    _unloadable_reported: set[tuple[str, str]]
    #: How long before their time fires are claimed (see CLAIM_AHEAD).
    claim_ahead: timedelta = CLAIM_AHEAD
    #: Fires of in-memory jobs up to this time were handed to the gate ahead of it.
    _claimed_ahead: datetime | None = None

    #
    # One pass per wake-up, as a task on the loop. For each store: take the due jobs and
    # record their next run times (in a worker thread for a persistent store, so the loop
    # never waits on it), then submit the runs on the loop. A fire is recorded in the
    # store *before* it runs: when the store cannot take the write, the fire waits for it
    # (and catches up by the job's coalesce and misfire settings), instead of running from
    # a state that a later write could undo or that would run it again.

    def wakeup(self) -> None:
        """Process due jobs soon: from any thread, coalescing requests made meanwhile."""
        loop = self._eventloop
        if loop is None or loop.is_closed():
            return
        if on_loop(loop):
            self._request_pass()
        else:
            loop.call_soon_threadsafe(self._request_pass)

    def _request_pass(self) -> None:
        if self.state == STATE_STOPPED or self._eventloop is None:
            return
        self._stop_timer()
        self.gate.job_changed()
        if self._pass is not None:
            self._pass_again = True  # something changed during the pass: look again after
            return
        # Not in the caller's context (a request adding a job, say): nothing of it lives
        # on in the pass.
        self._pass = contextvars.Context().run(self._eventloop.create_task, self._run_passes())

    async def _run_passes(self) -> None:
        wait: float | None = None
        try:
            while True:
                self._pass_again = False
                try:
                    wait = await self._process_due()
                except Exception:
                    wait = float(self.jobstore_retry_interval)
                    logger.exception("Processing due jobs failed; trying again in %.3g s", wait)
                if not self._pass_again or self.state == STATE_STOPPED:
                    break
        finally:
            self._pass = None
        if self.state == STATE_RUNNING:
            self._start_timer(self.gate.poll_wait(wait))

    async def _process_due(self) -> float | None:
        if self.state != STATE_RUNNING or not self.gate.may_take():
            return None
        next_wakeup: datetime | None = None
        events: list[Any] = []
        for alias, store in list(self._jobstores.items()):
            first_claim = CLAIM_SLICE  # later takes of this pass are claimed at once
            while True:
                if is_persistent(store):
                    taken = await asyncio.to_thread(self._take_due, alias, store)
                else:
                    # On the loop: a large due batch a slice at a time, each dispatched
                    # before the next is taken (requests are served in between).
                    taken = self._take_due(alias, store, TAKE_SLICE)
                if self.listened():
                    events += [
                        JobEvent(EVENT_JOB_REMOVED, removed, alias) for removed in taken.removed
                    ]
                events += await self._dispatch(alias, taken.fires, first_claim)
                first_claim = MAX_CLAIM_SLICE
                if not taken.more or self.state != STATE_RUNNING:
                    break
            for when in (taken.next_run, taken.retry_at):
                if when is not None and (next_wakeup is None or when < next_wakeup):
                    next_wakeup = when
        for event in events:
            self._dispatch_event(event)
        if self.state != STATE_RUNNING:
            return None
        now = datetime.now(self.timezone)
        ahead = self._claim_ahead(now)
        if ahead is not None and (next_wakeup is None or ahead < next_wakeup):
            next_wakeup = ahead
        if next_wakeup is None:
            return None
        wait = next_wakeup.timestamp() - now.timestamp()
        return float(min(max(wait, 0.0), TIMEOUT_MAX))

    def _claim_ahead(self, now: datetime) -> datetime | None:
        """Hand the gate the next fires of in-memory jobs, once the first of them is
        within :attr:`claim_ahead`: the gate claims them in the background, and they
        start without waiting for a claim when due. Returns when to look again (None:
        no such fire is coming).

        Only each job's next run time: a job that falls behind, or changes meanwhile, is
        asked for its actual due fires when they are due, and those are claimed then."""
        lead = self.claim_ahead
        if not lead or not self.gate.reserves():
            self._claimed_ahead = None
            return None
        after = self._claimed_ahead
        if after is None or after < now:
            after = now
        elif after > now + lead:
            return after - lead  # the fires claimed ahead still reach far enough
        until = now + 2 * lead
        jobs: list[Job] = []
        following: datetime | None = None
        for store in self._jobstores.values():
            found, beyond = upcoming_jobs(store, after, until)
            jobs += found
            if beyond is not None and (following is None or beyond < following):
                following = beyond
        jobs.sort(key=_next_run_time)
        if not jobs or jobs[0].next_run_time > now + lead:
            first = jobs[0].next_run_time if jobs else following
            return None if first is None else first - lead
        if len(jobs) > MAX_CLAIM_AHEAD:
            jobs = jobs[:MAX_CLAIM_AHEAD]
            until = following = jobs[-1].next_run_time
        fires = [
            Fire(job.id, job.next_run_time, keep_until(job, job.next_run_time))
            for job in jobs
            if not isinstance(job, UnloadableJob)
        ]
        for start in range(0, len(fires), MAX_CLAIM_SLICE):
            self.gate.reserve(fires[start : start + MAX_CLAIM_SLICE])
        self._claimed_ahead = until
        return None if following is None else following - lead

    async def _dispatch(
        self, alias: str, fires: list[tuple[Job, list[datetime]]], first: int = CLAIM_SLICE
    ) -> list[Any]:
        """Submit the fires the gate admits. A large batch is asked for in slices, each
        slice's claim under way while the previous slice is submitted: the first runs start
        after one small claim (``first`` jobs, :data:`CLAIM_SLICE` for the first take of a
        pass), not after the claim of the whole burst. Each slice is twice the one before
        (up to :data:`MAX_CLAIM_SLICE`): every claim is a round trip to the ledger's
        thread, which waits for the loop's GIL while the loop is busy, so fewer, larger
        claims cost the burst less."""
        if self.gate is OPEN_GATE or len(fires) <= first:
            return await self._submit_fires(alias, await self._admitted(fires))
        slices = []
        start, size = 0, first
        while start < len(fires):
            slices.append(fires[start : start + size])
            start, size = start + size, min(size * 2, MAX_CLAIM_SLICE)
        events: list[Any] = []
        claim = asyncio.ensure_future(self._admitted(slices[0]))
        for following in [*slices[1:], None]:
            admitted = await claim
            if following is not None:
                claim = asyncio.ensure_future(self._admitted(following))
            events += await self._submit_fires(alias, admitted)
            if self.state == STATE_STOPPED:
                break
        with contextlib.suppress(Exception):
            await claim  # stopped meanwhile: the last slice claimed is not started
        return events

    async def _admitted(
        self, fires: list[tuple[Job, list[datetime]]]
    ) -> list[tuple[Job, list[datetime]]]:
        """The fires the gate lets this process run (all of them with the open gate)."""
        if self.gate is OPEN_GATE or not fires:
            return fires
        asked = [
            Fire(job.id, when, keep_until(job, when))
            for job, run_times in fires
            for when in run_times
        ]
        # A gate answers with the fires it was given: told apart by identity, no new
        # objects (a burst allocates enough already: the garbage collector notices).
        granted = await self.gate.admit(asked)
        if len(granted) == len(asked):  # each at most once: all of them
            return fires
        admitted = {id(fire) for fire in granted}
        kept = []
        position = 0
        for job, run_times in fires:
            allowed = [
                when
                for offset, when in enumerate(run_times)
                if id(asked[position + offset]) in admitted
            ]
            position += len(run_times)
            if len(allowed) < len(run_times):
                logger.debug(
                    "Fire gate held back %d run(s) of job %r",
                    len(run_times) - len(allowed),
                    job.id,
                )
            if allowed:
                kept.append((job, allowed))
        return kept

    def _take_due(self, alias: str, store: Any, limit: int | None = None) -> _Taken:
        """Take the due jobs of one store (at most ``limit`` of an in-memory one: see
        ``taken.more``) and record their next run times in it.

        Runs in a worker thread for a persistent store; ``now`` is read after the store
        answered, so time spent waiting on it never makes runs look due twice.
        """
        taken = _Taken()
        with self._jobstores_lock:
            try:
                now = datetime.now(self.timezone)
                due, taken.more = due_jobs(store, now, limit)
                now = datetime.now(self.timezone)
                writes = DueWrites(store, len(due))
                try:
                    for job in due:
                        if isinstance(job, UnloadableJob):
                            self._report_unloadable(job)
                            taken.blocked = True
                            continue
                        self._take_one(writes, job, now, taken)
                finally:
                    writes.flush()  # before any of the runs starts
                taken.next_run = self._store_next_run(store, now, taken.blocked)
            except Exception as exc:
                taken.retry_at = self._store_failed(alias, exc, datetime.now(self.timezone))
                return taken
        self._store_ok(alias)
        return taken

    def _take_one(self, writes: DueWrites, job: Job, now: datetime, taken: _Taken) -> None:
        if job.executor not in self._executors:
            logger.error(
                "Job %r names executor %r, which does not exist; removing the job",
                job.id,
                job.executor,
            )
            writes.remove(job.id)
            taken.removed.append(job.id)
            return
        was = job.next_run_time
        run_times, next_run = due_fires(job, now)
        if not run_times:
            return
        # Recorded before the runs start; if this raises, they do not start.
        try:
            if next_run is None:
                writes.remove(job.id, was)
                taken.removed.append(job.id)
            else:
                job._modify(next_run_time=next_run)
                writes.update(job, was)
        except JobLookupError:
            return  # removed, paused or rescheduled meanwhile: its fire goes with it
        taken.fires.append((job, run_times))

    def _store_next_run(self, store: Any, now: datetime, blocked: bool) -> datetime | None:
        """When the store next has work; past unloadable jobs are retried later, not now."""
        next_run: datetime | None = store.get_next_run_time()
        if next_run is not None and blocked and next_run <= now:
            loadable = [
                job.next_run_time
                for job in store.get_all_jobs()
                if job.next_run_time is not None and not isinstance(job, UnloadableJob)
            ]
            retry = now + timedelta(seconds=self.jobstore_retry_interval)
            next_run = min([*loadable, retry])
        return None if next_run is None else next_run.astimezone(self.timezone)

    def _report_unloadable(self, job: UnloadableJob) -> None:
        key = (job.id, job.load_error)
        level = logging.DEBUG if key in self._unloadable_reported else logging.WARNING
        self._unloadable_reported.add(key)
        logger.log(
            level,
            "Job %r cannot be loaded (%s); it is kept in its store and runs again once its "
            "code loads",
            job.id,
            job.load_error,
        )

    def listened(self) -> bool:
        """Whether anything hears the job events (see ``Leadership``)."""
        return bool(self._listeners)

    async def _submit_fires(
        self, alias: str, fires: list[tuple[Job, list[datetime]]]
    ) -> list[Any]:
        events: list[Any] = []
        listened = self.listened()
        for index, (job, run_times) in enumerate(fires):
            if index and not index % SUBMIT_SLICE:
                # A large due batch (a thousand jobs due at the same second) goes out in
                # slices, with the loop free in between: requests are served while it is
                # dispatched instead of waiting behind all of it.
                await asyncio.sleep(0)
                if self.state == STATE_STOPPED:
                    # Stopped meanwhile: nothing can run any more (as for runs taken
                    # from a persistent store while the scheduler stops).
                    logger.info(
                        "Scheduler stopped while dispatching: %d due run(s) not started",
                        len(fires) - index,
                    )
                    break
            try:
                executor = self._lookup_executor(job.executor)
                executor.submit_job(job, run_times)
            except MaxInstancesReachedError:
                logger.warning(
                    "Run of job %r skipped: %d instance(s) already running (max_instances)",
                    job.id,
                    job.max_instances,
                )
                events.append(
                    JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job.id, alias, run_times)
                )
                for run_time in run_times:
                    self._report_soon(signals.job_skipped, job.id, run_time)
            except Exception:
                logger.exception("Submitting job %r to executor %r failed", job.id, job.executor)
            else:
                if listened:
                    events.append(
                        JobSubmissionEvent(EVENT_JOB_SUBMITTED, job.id, alias, run_times)
                    )
        return events

    def _store_failed(self, alias: str, exc: Exception, now: datetime) -> datetime:
        retry = self.jobstore_retry_interval
        # SQLAlchemy's message repeats the statement and its parameters, which change on
        # every retry (and may hold pickled job data): the driver's own error says enough.
        cause = getattr(exc, "orig", None) or exc
        message = f"{type(cause).__name__}: {cause}"
        level = logging.DEBUG if self._failing_stores.get(alias) == message else logging.WARNING
        self._failing_stores[alias] = message
        logger.log(level, "Job store %r failed (%s); retrying in %.3g s", alias, message, retry)
        return now + timedelta(seconds=retry)

    def _store_ok(self, alias: str) -> None:
        if self._failing_stores.pop(alias, None) is not None:
            logger.warning("Job store %r is reachable again; resuming", alias)


@dataclass
class _Taken:
    """What one pass took from one store: runs to start and when to look again."""

    fires: list[tuple[Job, list[datetime]]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    next_run: datetime | None = None
    retry_at: datetime | None = None
    blocked: bool = False  # unloadable jobs are due: the store's next run time hides others
    more: bool = False  # more jobs are due than this take's limit


#: How long past a fire's grace time a ledger remembers it (a standby taking over with an
#: older view of an in-memory job may still find it due until then).
LEDGER_MARGIN = timedelta(hours=1)


def _next_run_time(job: Job) -> datetime:
    return job.next_run_time  # type: ignore[no-any-return]


def keep_until(job: Job, run_time: datetime) -> datetime | None:
    """Until when no process can find this fire due: its grace time, and a margin; None
    (the ledger's own default) for a job that runs however late."""
    grace = job.misfire_grace_time
    if grace is None:
        return None
    return run_time + timedelta(seconds=grace) + LEDGER_MARGIN


#: Most run times one pass hands a job that fell behind, and most fire times it steps
#: through to find them: an outage or a tiny interval must not make the scheduler build
#: an unbounded list of missed runs (APScheduler's Job._get_run_times does).
MAX_DUE_RUN_TIMES = 100
MAX_DUE_STEPS = 1000


def due_fires(job: Job, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The run times ``job`` owes at ``now``, as ``job._get_run_times(now)``, bounded;
    and its fire time after the last of them (its next run time, None: no more).

    Only what can still run is kept: with ``coalesce`` the latest, else the latest
    :data:`MAX_DUE_RUN_TIMES`. A job more than :data:`MAX_DUE_STEPS` fires behind (an
    outage, a tiny interval) skips to the fires near ``now``, never before its
    misfire_grace_time, instead of stepping through every fire it missed: the skipped
    ones are neither run nor reported one by one; a warning says so.
    """
    keep = 1 if job.coalesce else MAX_DUE_RUN_TIMES
    first: datetime | None = job.next_run_time
    run_times, following = _walk_fires(job.trigger, first, now, keep)
    if first is None or following is None or following > now:
        return run_times, following
    # Far behind: start again `keep` mean gaps before now (never before the grace time).
    gap = max((following - first) / MAX_DUE_STEPS, timedelta(microseconds=1))
    start = now - gap * keep
    if job.misfire_grace_time is not None:
        start = max(start, now - timedelta(seconds=job.misfire_grace_time))
    restart = job.trigger.get_next_fire_time(None, start)
    if restart is None or restart > now:
        return run_times, following  # a later pass goes on from the last of these
    logger.warning(
        "Job %r is more than %d runs behind: skipping the runs scheduled before %s",
        job.id,
        MAX_DUE_STEPS,
        restart.isoformat(),
    )
    return _walk_fires(job.trigger, restart, now, keep)


def _walk_fires(
    trigger: BaseTrigger, fire: datetime | None, now: datetime, keep: int
) -> tuple[list[datetime], datetime | None]:
    """Up to :data:`MAX_DUE_STEPS` fire times from ``fire`` to ``now``, keeping the last
    ``keep``; and the fire time after the last of them."""
    run_times: deque[datetime] = deque(maxlen=keep)
    for _ in range(MAX_DUE_STEPS):
        if fire is None or fire > now:
            break
        run_times.append(fire)
        fire = trigger.get_next_fire_time(fire, now)
    return list(run_times), fire
