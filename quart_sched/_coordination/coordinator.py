"""The coordinator: one per running scheduler; leader or standby, and the fire gate.

It runs one task on the serving loop. As a standby it tries to take the lease every
:data:`ACQUIRE_INTERVAL` seconds; as the leader it renews it every
:data:`RENEW_INTERVAL` seconds. It trusts its leadership only until
``ttl - STEP_DOWN_MARGIN`` seconds after the start of its last successful renewal, on
this process's monotonic clock: a leader that was paused (GC, SIGSTOP, a partition)
finds on waking that its time is up and steps down before it takes or runs anything,
and the ledger refuses its claims anyway, since a new epoch is current by then.

As the fire gate (see ``_gate``), it lets the wake-up pass take due fires only while it
leads, and admits only the fires the ledger grants it. Fires coming due soon are claimed
ahead of their time (:meth:`Coordinator.reserve`, in the background), so that a fire
then starts without waiting for the ledger; a leader that stops gives back those it did
not reach, and one that dies leaves them claimed and not run, as it would a fire it had
claimed and not started yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .._gate import Fire, FireGate
from .backend import (
    ACQUIRE_INTERVAL,
    DEFAULT_KEEP,
    RENEW_INTERVAL,
    STEP_DOWN_MARGIN,
    Backend,
    CoordinationUnavailableError,
    Lease,
    LeaseLostError,
    Member,
)

logger = logging.getLogger("quart_sched")
FireKey = tuple[str, datetime]

LEADER = "leader"
STANDBY = "standby"
#: Most finished fires marked in the ledger in one call.
FINISH_BATCH = 1000
#: The leader looks at the job stores at least this often (seconds): a notification of a
#: standby's change may be lost.
POLL_INTERVAL = 2.0
#: Seconds between two looks for fires claimed ahead that no pass will ask for.
PURGE_INTERVAL = 60.0


@dataclass
class Hooks:
    """What the coordinator calls in the scheduler: all on the loop."""

    #: Process due jobs now (leadership taken, or another process changed a job).
    wake: Callable[[], None]
    #: Leadership changed: (became leader?, the lease).
    changed: Callable[[bool, Lease], None]
    #: Run again fires claimed by a leader that died during their run (opted-in jobs).
    rerun: Callable[[list[Fire]], Awaitable[None]]
    #: The ids of the jobs this process knows.
    job_ids: Callable[[], Awaitable[list[str]]]


class Coordinator(FireGate):
    """Leader or standby for one scheduler start (see the module)."""

    def __init__(
        self,
        backend: Backend,
        member: Member,
        hooks: Hooks,
        *,
        rerun_patterns: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.member = member
        self.hooks = hooks
        self.rerun_patterns = tuple(rerun_patterns)
        self.lease: Lease | None = None
        self._valid_until = 0.0  # monotonic: trust the lease until then
        self._task: asyncio.Task[None] | None = None
        self._finished: list[Fire] = []
        self._in_flight: set[Fire] = set()  # admitted here, not yet ended
        self._error: str | None = None
        self._stopping = False
        self._notifying: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        # Fires claimed ahead of their time (see reserve), keyed by (job id, run time): a
        # tuple hashes and compares in C, a Fire in Python, and a burst asks for thousands.
        self._reserved: dict[FireKey, tuple[Fire, int]] = {}  # the epoch it was claimed in
        self._to_reserve: list[tuple[list[Fire], asyncio.Future[None]]] = []
        self._reserving: dict[FireKey, asyncio.Future[None]] = {}  # claim under way: its end
        self._reservation: asyncio.Task[None] | None = None
        self._next_purge = 0.0

    # state ----------------------------------------------------------------------------

    @property
    def role(self) -> str:
        return LEADER if self.leading else STANDBY

    @property
    def leading(self) -> bool:
        """True while this process holds a lease it may still trust."""
        return self.lease is not None and time.monotonic() < self._valid_until

    @property
    def error(self) -> str | None:
        """Why the backend cannot be reached, while it cannot."""
        return self._error

    # the fire gate --------------------------------------------------------------------

    def may_take(self) -> bool:
        if self.lease is not None and not self.leading:
            self._step_down("its lease ran out before it could renew it")
        return self.leading

    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        reserving = self._reserving
        if reserving:
            # Being claimed ahead: a claim now would race that claim.
            keys = [(fire.job_id, fire.run_time) for fire in fires]
            for claimed in {reserving[key] for key in keys if key in reserving}:
                await asyncio.shield(claimed)
        lease = self.lease
        if lease is None or not self.leading:
            # Taken from the stores while this process led; its lease ran out since.
            logger.warning(
                "%d due run(s) not started: this process stopped leading while taking them",
                len(fires),
            )
            return []
        ahead, rest = self._split_reserved(fires, lease.epoch)
        if not rest:
            return ahead
        try:
            granted = [*ahead, *await self.backend.claim(lease, rest)]
        except LeaseLostError:
            self._step_down("another process leads now")
            self._give_back(lease, ahead)  # not run here either
            return []
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
            logger.warning(
                "%d due run(s) not started: the fire ledger cannot be reached (%s)",
                len(rest),
                exc,
            )
            return ahead
        if self.rerun_patterns:
            # Only runs that a next leader may run again need their end marked.
            self._in_flight.update(fire for fire in granted if self._reruns(fire.job_id))
        refused = len(fires) - len(granted)
        if refused:
            logger.info("%d due run(s) already claimed by another process: not run", refused)
        return granted

    def _split_reserved(self, fires: Sequence[Fire], epoch: int) -> tuple[list[Fire], list[Fire]]:
        """``fires`` claimed ahead under ``epoch`` (taken off the reservations), and the
        others."""
        reserved = self._reserved
        if not reserved:
            return [], list(fires)
        ahead: list[Fire] = []
        rest: list[Fire] = []
        for fire in fires:
            entry = reserved.pop((fire.job_id, fire.run_time), None)
            (ahead if entry is not None and entry[1] == epoch else rest).append(fire)
        return ahead, rest

    def reserves(self) -> bool:
        return self.leading and not self._stopping

    def reserve(self, fires: Sequence[Fire]) -> None:
        """Claim ``fires`` now, in the background; :meth:`admit` then grants them without
        a round trip to the ledger. Not the fires of jobs that run again when interrupted
        (their claims must say whether the run ended, which a claim made ahead cannot)."""
        if not self.reserves():
            return
        reserved, reserving = self._reserved, self._reserving
        asked = [
            fire
            for fire in fires
            if (fire.job_id, fire.run_time) not in reserved
            and (fire.job_id, fire.run_time) not in reserving
            and not (self.rerun_patterns and self._reruns(fire.job_id))
        ]
        if not asked:
            return
        loop = asyncio.get_running_loop()
        claimed = loop.create_future()
        reserving.update({(fire.job_id, fire.run_time): claimed for fire in asked})
        self._to_reserve.append((asked, claimed))
        if self._reservation is None:
            self._reservation = loop.create_task(self._claim_ahead())

    async def _claim_ahead(self) -> None:
        try:
            while self._to_reserve:
                fires, claimed = self._to_reserve.pop(0)
                try:
                    await self._claim_ahead_once(fires)
                except Exception:  # a bug, not an outage: these are claimed when due
                    logger.exception("Claiming %d fire(s) ahead of their time failed", len(fires))
                finally:
                    self._settle(fires, claimed)
        finally:
            self._reservation = None
            self._drop_queued()  # cancelled

    def _drop_queued(self) -> None:
        """Reservations not asked for yet are not made (their fires are claimed when due)."""
        queued, self._to_reserve = self._to_reserve, []
        for fires, claimed in queued:
            self._settle(fires, claimed)

    def _settle(self, fires: list[Fire], claimed: asyncio.Future[None]) -> None:
        """A reservation is over (made or not): passes waiting for it go on."""
        for fire in fires:
            self._reserving.pop((fire.job_id, fire.run_time), None)
        claimed.set_result(None)

    async def _claim_ahead_once(self, fires: list[Fire]) -> None:
        lease = self.lease
        if lease is None or not self.leading:
            return
        try:
            granted = await self.backend.claim(lease, fires)
        except LeaseLostError:
            self._step_down("another process leads now")
            return
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
            return  # claimed when they come due instead
        if self.lease is not lease:
            self._give_back(lease, granted)  # stepped down meanwhile
            return
        epoch = lease.epoch
        self._reserved.update({(fire.job_id, fire.run_time): (fire, epoch) for fire in granted})
        self._purge_reserved()

    def _purge_reserved(self) -> None:
        """Forget reservations no pass will ask for (the job was paused, removed or
        rescheduled after its fire was claimed): once the ledger forgets them too."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL
        now = datetime.now(timezone.utc)
        reserved = self._reserved
        for key in [key for key, (fire, _epoch) in reserved.items() if _forgotten(fire, now)]:
            del reserved[key]

    def _take_reserved(self) -> list[Fire]:
        """The fires claimed ahead and not run yet, forgotten here (to be given back)."""
        reserved, self._reserved = self._reserved, {}
        return [fire for fire, _epoch in reserved.values()]

    def _give_back(self, lease: Lease, fires: Collection[Fire]) -> None:
        """Unclaim, in the background, fires claimed ahead that this process will not run."""
        if not fires:
            return
        task = asyncio.get_running_loop().create_task(self.backend.unclaim(lease, list(fires)))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def tracks_runs(self) -> bool:
        """Whether :meth:`ran` needs to hear of ended runs (SCHEDULER_RERUN_INTERRUPTED)."""
        return bool(self.rerun_patterns)

    def _reruns(self, job_id: str) -> bool:
        return any(fnmatch.fnmatchcase(job_id, pattern) for pattern in self.rerun_patterns)

    def ran(self, fire: Fire) -> None:
        if fire in self._in_flight:
            self._in_flight.discard(fire)
            self._finished.append(fire)

    def job_changed(self) -> None:
        if self.leading or self._notifying is not None or self._stopping:
            return
        self._notifying = asyncio.get_running_loop().create_task(self._notify_leader())

    async def _notify_leader(self) -> None:
        try:
            await self.backend.notify()
        except CoordinationUnavailableError:
            pass  # the leader's poll finds the change
        finally:
            self._notifying = None

    def poll_wait(self, wait: float | None) -> float | None:
        if not self.leading:
            return None  # a standby takes nothing: leadership wakes it
        return POLL_INTERVAL if wait is None else min(wait, POLL_INTERVAL)

    # the task ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the backend and try to lead at once (a lone process leads from its first
        pass); then keep going in a task until :meth:`stop`."""
        try:
            await self.backend.open()
            await self.backend.listen(self._notified)
            await self._try_to_lead()
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Give leadership up at once (a graceful stop) and disconnect."""
        self._stopping = True
        try:
            task, self._task = self._task, None
            notifying, self._notifying = self._notifying, None
            if notifying is not None:
                await asyncio.wait([notifying])
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._drop_queued()
            reservation = self._reservation
            if reservation is not None:
                await asyncio.wait([reservation])  # its claim's answer says what to give back
            if self._releases:
                await asyncio.wait(set(self._releases))
            lease, self.lease = self.lease, None
            if lease is not None:
                # Fires claimed ahead that no pass reached: the next leader's to run.
                await self.backend.unclaim(lease, self._take_reserved())
                # Runs still under way are this process's to finish or interrupt (its
                # history says which): settled, so the next leader does not run them again.
                self._finished += self._in_flight
                self._in_flight.clear()
                await self._flush_finished()
                await self.backend.release(lease)
                logger.info("Leadership released (epoch %d): stopping", lease.epoch)
                self.hooks.changed(False, lease)
            await self.backend.close()
        finally:
            self.backend.abandon()  # cancelled half-way (the loop ends): still let go

    def abandon(self) -> None:
        """Stop without the loop (it is stopping or gone): no release, but what dies with
        the process is let go now, so a standby takes over at once."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed
                task.cancel()
        self.lease = None
        self.backend.abandon()

    async def _run(self) -> None:
        # Checks _stopping too: a client library may swallow the cancellation that stop()
        # sends (a socket timeout firing at the same moment turns it into a timeout error,
        # which _renew takes for an outage), and this loop must end all the same.
        while not self._stopping:
            if self.lease is not None:
                await asyncio.sleep(RENEW_INTERVAL)
                await self._renew()
            else:
                await asyncio.sleep(ACQUIRE_INTERVAL)
                await self._try_to_lead()

    async def _try_to_lead(self) -> None:
        started = time.monotonic()
        try:
            lease = await self.backend.acquire(self.member)
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
            return
        self._available()
        if lease is None or self._stopping:
            return
        self.lease = lease
        self._valid_until = started + self.backend.ttl - STEP_DOWN_MARGIN
        logger.warning(
            "This process (%s, pid %d) leads the scheduler now (epoch %d): it runs the jobs",
            self.member.host,
            self.member.pid,
            lease.epoch,
        )
        self.hooks.changed(True, lease)
        await self._rerun_unfinished(lease)
        self.hooks.wake()

    async def _renew(self) -> None:
        lease = self.lease
        if lease is None:
            return
        if not self.leading:
            self._step_down("its lease ran out before it could renew it")
            return
        started = time.monotonic()
        try:
            renewed = await self.backend.renew(lease)
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
            return  # still trusted until _valid_until; stepped down after that
        self._available()
        if not renewed:
            self._step_down("another process leads now")
            return
        self._valid_until = started + self.backend.ttl - STEP_DOWN_MARGIN
        await self._flush_finished()

    def _step_down(self, why: str) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        self._give_back(lease, self._take_reserved())  # never run here now: another leader may
        if not self._stopping:
            # Still ours on the backend (a pause outlived the trust, not the lease)? Let it
            # go now, so that a standby need not wait for the expiry. A no-op otherwise.
            task = asyncio.get_running_loop().create_task(self.backend.release(lease))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
        logger.warning(
            "This process (pid %d) no longer leads the scheduler (epoch %d): %s",
            self.member.pid,
            lease.epoch,
            why,
        )
        self.hooks.changed(False, lease)

    async def _flush_finished(self) -> None:
        while self._finished:
            batch, self._finished = self._finished[:FINISH_BATCH], self._finished[FINISH_BATCH:]
            try:
                await self.backend.finish(batch)
            except CoordinationUnavailableError:
                self._finished[:0] = batch
                return

    async def _rerun_unfinished(self, lease: Lease) -> None:
        """Runs the previous leader claimed and never finished (it died during them) are
        interrupted; jobs that opted in (``SCHEDULER_RERUN_INTERRUPTED``) run them again."""
        if not self.rerun_patterns:
            return
        chosen = [job_id for job_id in await self.hooks.job_ids() if self._reruns(job_id)]
        try:
            fires = await self.backend.unfinished(lease, chosen)
        except (CoordinationUnavailableError, LeaseLostError) as exc:
            logger.warning("Could not look for interrupted runs to run again (%s)", exc)
            return
        if fires:
            logger.warning(
                "Running again %d run(s) interrupted by the end of the previous leader",
                len(fires),
            )
            await self.hooks.rerun(fires)

    # wake-ups -----------------------------------------------------------------------------

    def _notified(self) -> None:
        if self.leading:
            self.hooks.wake()

    # outages ------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> None:
        message = str(exc)
        if self._error != message:
            logger.warning("Coordination backend %s cannot be reached: %s", self.backend.kind, exc)
        self._error = message

    def _available(self) -> None:
        if self._error is not None:
            logger.warning("Coordination backend %s is reachable again", self.backend.kind)
            self._error = None

    async def current_leader(self) -> Lease | None:
        """The lease as the backend has it (this process's own while it leads)."""
        if self.leading:
            return self.lease
        try:
            return await self.backend.leader()
        except CoordinationUnavailableError as exc:
            self._unavailable(exc)
            return None


def _forgotten(fire: Fire, now: datetime) -> bool:
    """Whether the ledger has forgotten ``fire`` by ``now`` (no pass can find it due)."""
    keep = fire.keep_until if fire.keep_until is not None else fire.run_time + DEFAULT_KEEP
    return keep < now
