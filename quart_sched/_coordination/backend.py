"""What a coordination backend does: a lease with an epoch, a fire ledger, and wake-ups.

One backend object per scheduler start, used only on the serving loop (a backend whose
client is synchronous, such as the SQLite file, runs its calls on its own thread). The
:class:`~quart_sched._coordination.coordinator.Coordinator` drives it: a standby calls
:meth:`Backend.acquire` every :data:`ACQUIRE_INTERVAL` seconds, the leader calls
:meth:`Backend.renew` every :data:`RENEW_INTERVAL` seconds and :meth:`Backend.claim`
before any run starts.

Every backend keeps, per coordination ``key`` (one app and its job stores):

- **the lease**: who leads (host, pid, token), since when, under which **epoch**. The
  epoch only ever grows: each acquisition takes a new one. The lease expires
  :attr:`Backend.ttl` seconds after its last renewal, on the backend's clock (the file's
  host, PostgreSQL's ``now()``, Redis's key TTL). A backend that can tell that the holder
  died (a file lock or an advisory lock released with its process, a Redis client gone)
  hands the lease over at once instead of waiting for the expiry.
- **the ledger**: one row per claimed fire (job id, scheduled run time), written only if
  no row exists for that fire *and* the claimer's epoch is the current one. Rows are kept
  until :attr:`Fire.keep_until`; a run that ends is marked finished. A leader that stops
  gives back (:meth:`Backend.unclaim`) the fires it claimed ahead of their time.
- **wake-ups**: :meth:`Backend.notify` reaches every process listening with
  :meth:`Backend.listen` (the leader), so a write made by a standby takes effect at once;
  notifications may be lost, so the leader also polls.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from .._gate import Fire

#: How long a ledger remembers a claimed fire that says nothing (no misfire grace time).
DEFAULT_KEEP = timedelta(days=7)
#: Seconds a lease lasts after its last renewal (anchor: APScheduler 4 uses 30 s).
LEASE_TTL = 5.0
#: Seconds between two renewals by the leader.
RENEW_INTERVAL = 1.0
#: Seconds between two attempts of a standby to take the lease.
ACQUIRE_INTERVAL = 0.5
#: A leader stops running jobs this long before its lease could expire on the backend,
#: when it could not renew (a pause, an outage): the next leader never overlaps it.
STEP_DOWN_MARGIN = 1.5


class LeaseLostError(Exception):
    """The lease is not this process's any more (another epoch is current)."""


class CoordinationUnavailableError(Exception):
    """The coordination backend cannot be reached (the message says why)."""


@dataclass(frozen=True)
class Member:
    """One process taking part: ``token`` tells it from an earlier one with the same pid."""

    host: str
    pid: int
    token: str


@dataclass(frozen=True)
class Lease:
    """Leadership as the backend records it."""

    epoch: int
    host: str
    pid: int
    token: str
    since: datetime  # when this epoch began, UTC

    def held_by(self, member: Member) -> bool:
        return self.token == member.token

    def as_json(self) -> dict[str, Any]:
        """The ``leader`` object of ``GET <prefix>``."""
        return {
            "host": self.host,
            "pid": self.pid,
            "since": self.since.astimezone(timezone.utc).isoformat(),
            "epoch": self.epoch,
        }


def coordination_key(*parts: str) -> str:
    """A short name for one app and its job stores, safe in file names, SQL identifiers'
    values, Redis keys and channel names: 16 hex digits."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:16]


class Backend(ABC):
    """A lease, a fire ledger and wake-ups for one coordination ``key``."""

    #: "file", "postgresql" or "redis": what ``GET <prefix>`` shows as the backend.
    kind: ClassVar[str]

    def __init__(self, key: str, *, ttl: float = LEASE_TTL) -> None:
        self.key = key
        self.ttl = ttl

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the backend lives, with no password: a path or a URL."""

    @abstractmethod
    async def open(self) -> None:
        """Connect (and create tables or files if missing).

        :raises CoordinationUnavailableError: if the backend cannot be reached
        """

    @abstractmethod
    async def close(self) -> None:
        """Stop listening and disconnect. Does not release a lease (see :meth:`release`)."""

    def abandon(self) -> None:  # noqa: B027  (most backends have nothing to do)
        """Let go of what dies with the process now, without the loop (it is stopping or
        gone): a standby then sees the death signal at once. No I/O, never raises."""

    @abstractmethod
    async def acquire(self, me: Member) -> Lease | None:
        """Take the lease if nobody holds it, it expired, or its holder is known to be
        gone; a new epoch each time. None when another process holds it. Called again
        by a leader that holds it, it returns the lease it holds.

        :raises CoordinationUnavailableError: if the backend cannot be reached
        """

    @abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend ``lease`` by :attr:`ttl` if it is still current (same epoch and token).
        False when it is not: another process took over.

        :raises CoordinationUnavailableError: if the backend cannot be reached
        """

    @abstractmethod
    async def release(self, lease: Lease) -> None:
        """Give the lease up now if it is still ``lease`` (a graceful stop), so that a
        standby takes over without waiting for the expiry. Never raises for an outage:
        the lease then expires on its own."""

    @abstractmethod
    async def leader(self) -> Lease | None:
        """The current lease, if one is held and not expired.

        :raises CoordinationUnavailableError: if the backend cannot be reached
        """

    @abstractmethod
    async def claim(self, lease: Lease, fires: Sequence[Fire]) -> Collection[Fire]:
        """Claim ``fires`` under ``lease`` in one round trip: the ones granted, i.e. those
        no process claimed before (the same objects: callers tell them apart by identity).
        Nothing is granted unless ``lease``'s epoch is current.

        :raises LeaseLostError: if ``lease`` is not current
        :raises CoordinationUnavailableError: if the backend cannot be reached
        """

    @abstractmethod
    async def unclaim(self, lease: Lease, fires: Sequence[Fire]) -> None:
        """Forget claims ``lease`` made for ``fires`` that will not run here (claimed ahead
        of their time by a leader that stops before it), so the next leader may claim
        them. Only rows of ``lease``'s epoch go, current or not: that epoch's process is
        the caller, and it runs none of them. Best effort: an outage is logged."""

    @abstractmethod
    async def finish(self, fires: Sequence[Fire]) -> None:
        """Mark claimed fires whose runs ended (best effort, batched by the caller)."""

    @abstractmethod
    async def unfinished(self, lease: Lease, job_ids: Collection[str]) -> list[Fire]:
        """Fires of ``job_ids`` claimed under an earlier epoch and never marked finished
        (their process died during the run), not yet past ``keep_until``; each is
        re-claimed under ``lease`` so that only one new leader gets it.

        :raises LeaseLostError: if ``lease`` is not current
        """

    @abstractmethod
    async def notify(self) -> None:
        """Wake every listening process (the leader): a job changed. Best effort."""

    @abstractmethod
    async def listen(self, wake: Callable[[], None]) -> None:
        """From now until :meth:`close`, call ``wake()`` on the loop for every
        notification (from any process, this one included). Returns once listening."""


def utc(when: datetime) -> datetime:
    """``when`` in UTC (the ledger and the lease keep UTC)."""
    return when.astimezone(timezone.utc)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def micros(when: datetime) -> int:
    """``when`` (aware) as whole microseconds since the epoch: exact, unlike a float, and
    cheap to send (the ledgers key fires on it)."""
    return (when - EPOCH) // _MICROSECOND


def from_micros(value: str | int) -> datetime:
    return EPOCH + int(value) * _MICROSECOND
