"""Coordination of the processes of one host through files in the instance folder.

``quart_sched-<key>.coordination.sqlite`` holds the lease and the fire ledger, written in
``BEGIN IMMEDIATE`` transactions (one writer at a time across processes; the host's clock
is every process's clock). ``quart_sched-<key>.lock`` is the death signal: the leader
holds an exclusive ``flock`` on it, which the kernel releases the moment the leader's
process ends, however it ends; a standby that gets the lock knows the leader is gone and
takes over at once instead of waiting for the lease to expire. Each process wakes the
leader with a datagram to the leader's abstract Unix socket (Linux), whose name the
leader registers in the file.

SQLite is synchronous: every call runs on the backend's own thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import sys
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

from .._gate import Fire
from .backend import (
    DEFAULT_KEEP,
    LEASE_TTL,
    Backend,
    CoordinationUnavailableError,
    Lease,
    LeaseLostError,
    Member,
    from_micros,
    micros,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the lease's expiry is the only signal
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("quart_sched")
T = TypeVar("T")

#: Seconds between two sweeps of ledger rows past their keep_until.
SWEEP_INTERVAL = 60.0
#: Seconds a statement waits for another process's transaction on the file.
BUSY_TIMEOUT = 2.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS lease (
        name TEXT PRIMARY KEY, epoch INTEGER NOT NULL, host TEXT, pid INTEGER,
        token TEXT, since REAL, expires_at REAL, locked INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS fires (
        job_id TEXT NOT NULL, run_time INTEGER NOT NULL, epoch INTEGER NOT NULL,
        claimed_at REAL NOT NULL, keep_until REAL NOT NULL,
        finished INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job_id, run_time))""",
    "CREATE INDEX IF NOT EXISTS fires_keep ON fires (keep_until)",
    """CREATE TABLE IF NOT EXISTS listeners (
        token TEXT PRIMARY KEY, address TEXT NOT NULL, seen_at REAL NOT NULL)""",
)

#: Lock files this process holds, closed in a forked child: a lock belongs to the open
#: file description, which a fork shares, so a child outliving the leader (a fork-started
#: process pool) would otherwise keep the lock, and the death signal, alive.
_held_locks: weakref.WeakSet[LockFile] = weakref.WeakSet()


def _close_in_child() -> None:
    for lock in list(_held_locks):
        lock.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class LockFile:
    """An exclusive ``flock`` on one file, taken without waiting."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_lock(self) -> bool:
        if self._fd is not None:
            return True
        if fcntl is None:
            return False
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        _held_locks.add(self)
        return True

    def unlock(self) -> None:
        fd, self._fd = self._fd, None
        _held_locks.discard(self)
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the lock

    def forget(self) -> None:
        """In a forked child: close this copy of the descriptor, the parent keeps its own."""
        self.unlock()


class FileBackend(Backend):
    """Lease, ledger and wake-ups for the processes of one host (see the module)."""

    kind = "file"

    def __init__(self, key: str, *, directory: str, ttl: float = LEASE_TTL) -> None:
        super().__init__(key, ttl=ttl)
        self.directory = directory
        self.path = os.path.join(directory, f"quart_sched-{key}.coordination.sqlite")
        self._lock = LockFile(os.path.join(directory, f"quart_sched-{key}.lock"))
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._listener: socket.socket | None = None
        self._address = ""
        self._listening_on: asyncio.AbstractEventLoop | None = None
        self._last_sweep = 0.0
        self._last_claim = 0.0

    @property
    def location(self) -> str:
        return self.path

    # the backend's thread --------------------------------------------------------------

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        if self._thread is None:
            raise CoordinationUnavailableError(f"coordination file {self.path!r} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, partial(func, *args))
        except (sqlite3.Error, OSError) as exc:
            raise CoordinationUnavailableError(
                f"coordination file {self.path!r}: {type(exc).__name__}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (committed, or rolled back on error)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(self.directory, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    db.execute(statement)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    # lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="quart_sched-coordination")
        await self._call(self._connect)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
            with contextlib.suppress(CoordinationUnavailableError):
                await self._call(self._forget_listener)
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(thread, self._close_db)
        thread.shutdown(wait=False)

    def abandon(self) -> None:
        self._lock.unlock()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):  # the loop may be closed
                listener_loop = self._listening_on
                if listener_loop is not None and not listener_loop.is_closed():
                    listener_loop.remove_reader(listener.fileno())
            listener.close()

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # the lease ---------------------------------------------------------------------------

    async def acquire(self, me: Member) -> Lease | None:
        return await self._call(self._acquire, me)

    def _acquire(self, me: Member) -> Lease | None:
        locked = self._lock.try_lock()
        with self._write() as db:
            row = db.execute(
                "SELECT epoch, token, expires_at, locked FROM lease WHERE name='lease'"
            ).fetchone()
            now = time.time()
            if row is not None and row[1] == me.token and row[2] > now:
                return self._read(db)  # ours already
            holder_gone = row is None or row[1] is None or row[2] <= now
            if not holder_gone and row[3] and locked:
                holder_gone = True  # its lock was released: its process ended
            if not holder_gone:
                if locked:
                    self._lock.unlock()  # the holder took over by expiry; leave it the lock
                return None
            epoch = (row[0] if row is not None else 0) + 1
            db.execute(
                "INSERT INTO lease (name, epoch, host, pid, token, since, expires_at, locked) "
                "VALUES ('lease', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "epoch=excluded.epoch, host=excluded.host, pid=excluded.pid, "
                "token=excluded.token, since=excluded.since, expires_at=excluded.expires_at, "
                "locked=excluded.locked",
                (epoch, me.host, me.pid, me.token, now, now + self.ttl, int(locked)),
            )
            return self._read(db)

    def _read(self, db: sqlite3.Connection) -> Lease | None:
        row = db.execute(
            "SELECT epoch, host, pid, token, since, expires_at FROM lease "
            "WHERE name='lease' AND token IS NOT NULL"
        ).fetchone()
        if row is None or row[5] <= time.time():
            return None
        epoch, host, pid, token, since, _expires = row
        return Lease(epoch, host, pid, token, datetime.fromtimestamp(since, timezone.utc))

    async def renew(self, lease: Lease) -> bool:
        return await self._call(self._renew, lease)

    def _renew(self, lease: Lease) -> bool:
        locked = self._lock.try_lock()  # a leader that took over by expiry gets it later
        with self._write() as db:
            renewed = db.execute(
                "UPDATE lease SET expires_at=?, locked=? "
                "WHERE name='lease' AND epoch=? AND token=?",
                (time.time() + self.ttl, int(locked), lease.epoch, lease.token),
            ).rowcount
        if not renewed:
            self._lock.unlock()
        return bool(renewed)

    async def release(self, lease: Lease) -> None:
        try:
            await self._call(self._release, lease)
        except CoordinationUnavailableError as exc:
            logger.warning("Could not release leadership (%s): it expires on its own", exc)
            self._lock.unlock()

    def _release(self, lease: Lease) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE lease SET host=NULL, pid=NULL, token=NULL, expires_at=0, locked=0 "
                "WHERE name='lease' AND epoch=? AND token=?",
                (lease.epoch, lease.token),
            )
        self._lock.unlock()

    async def leader(self) -> Lease | None:
        return await self._call(lambda: self._read(self._connect()))

    # the ledger --------------------------------------------------------------------------

    def _check(self, db: sqlite3.Connection, lease: Lease) -> None:
        row = db.execute("SELECT epoch, token FROM lease WHERE name='lease'").fetchone()
        if row is None or row[0] != lease.epoch or row[1] != lease.token:
            raise LeaseLostError(f"epoch {lease.epoch} is not current")

    async def claim(self, lease: Lease, fires: Sequence[Fire]) -> Collection[Fire]:
        if not fires:
            return []
        # The rows are made here, on the loop, which runs anyway: the claim's thread then
        # needs the GIL only to start and end one statement (a burst's loop holds the GIL
        # for milliseconds at a time, and every hand-over waits for it).
        rows = [
            (
                fire.job_id,
                micros(fire.run_time),
                None if fire.keep_until is None else fire.keep_until.timestamp(),
            )
            for fire in fires
        ]
        return await self._call(self._claim, lease, list(fires), rows, json.dumps(rows))

    def _claim(
        self, lease: Lease, fires: list[Fire], rows: list[tuple[Any, ...]], payload: str
    ) -> list[Fire]:
        db = self._connect()
        # Distinct for every claim of this process (the lease's epoch is this process's
        # alone): the rows this claim inserted are the ones that carry it.
        now = self._last_claim = max(time.time(), self._last_claim + 1e-6)
        # One statement, its own transaction, for the whole slice: the lease check is in
        # it, and its rows come in one JSON parameter. SQLite runs it in one step without
        # the GIL; every further statement (BEGIN, the check, COMMIT) or a statement per
        # row would take the GIL back from a busy loop once more, a wait of up to the
        # interpreter's switch interval each (5 ms).
        inserted = db.execute(
            "INSERT OR IGNORE INTO fires (job_id, run_time, epoch, claimed_at, keep_until) "
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), ?, ?, "
            "coalesce(json_extract(value, '$[2]'), ?) FROM json_each(?) "
            "WHERE EXISTS (SELECT 1 FROM lease WHERE name='lease' AND epoch=? AND token=?)",
            (
                lease.epoch,
                now,
                now + DEFAULT_KEEP.total_seconds(),
                payload,
                lease.epoch,
                lease.token,
            ),
        ).rowcount
        if inserted == len(fires):
            granted = fires
        elif inserted == 0:  # all claimed before, or the lease is not ours: which?
            self._check(db, lease)
            granted = []
        else:  # the lease was current when the rows went in
            granted = self._inserted(db, fires, rows, lease.epoch, now)
        if now - self._last_sweep > SWEEP_INTERVAL:
            self._last_sweep = now
            db.execute("DELETE FROM fires WHERE keep_until < ?", (now,))
        return granted

    @staticmethod
    def _inserted(
        db: sqlite3.Connection,
        fires: list[Fire],
        rows: list[tuple[Any, ...]],
        epoch: int,
        now: float,
    ) -> list[Fire]:
        """The fires whose rows a claim inserted (some were there already: claimed by an
        earlier leader, or asked twice), each once."""
        granted, seen = [], set()
        for fire, (job_id, run_time, _keep) in zip(fires, rows, strict=True):
            if (job_id, run_time) in seen:
                continue
            seen.add((job_id, run_time))
            if db.execute(
                "SELECT 1 FROM fires WHERE job_id=? AND run_time=? AND epoch=? AND claimed_at=?",
                (job_id, run_time, epoch, now),
            ).fetchone():
                granted.append(fire)
        return granted

    async def unclaim(self, lease: Lease, fires: Sequence[Fire]) -> None:
        if not fires:
            return
        rows = [(lease.epoch, fire.job_id, micros(fire.run_time)) for fire in fires]
        try:
            await self._call(self._unclaim, rows)
        except CoordinationUnavailableError as exc:
            logger.warning("%d run(s) claimed ahead not given back: %s", len(rows), exc)

    def _unclaim(self, rows: list[tuple[int, str, int]]) -> None:
        with self._write() as db:
            db.executemany(
                "DELETE FROM fires WHERE epoch=? AND job_id=? AND run_time=? AND finished=0",
                rows,
            )

    async def finish(self, fires: Sequence[Fire]) -> None:
        if fires:
            await self._call(self._finish, list(fires))

    def _finish(self, fires: list[Fire]) -> None:
        with self._write() as db:
            db.executemany(
                "UPDATE fires SET finished=1 WHERE job_id=? AND run_time=?",
                [(fire.job_id, micros(fire.run_time)) for fire in fires],
            )

    async def unfinished(self, lease: Lease, job_ids: Collection[str]) -> list[Fire]:
        if not job_ids:
            return []
        return await self._call(self._unfinished, lease, list(job_ids))

    def _unfinished(self, lease: Lease, job_ids: list[str]) -> list[Fire]:
        with self._write() as db:
            self._check(db, lease)
            marks = ",".join("?" * len(job_ids))
            rows = db.execute(
                "SELECT job_id, run_time, keep_until FROM fires WHERE epoch < ? AND "
                f"finished=0 AND keep_until > ? AND job_id IN ({marks}) "
                "ORDER BY run_time, job_id",
                (lease.epoch, time.time(), *job_ids),
            ).fetchall()
            db.executemany(
                "UPDATE fires SET epoch=? WHERE job_id=? AND run_time=?",
                [(lease.epoch, job_id, run_time) for job_id, run_time, _keep in rows],
            )
        return [
            Fire(job_id, from_micros(run_time), datetime.fromtimestamp(keep, timezone.utc))
            for job_id, run_time, keep in rows
        ]

    # wake-ups ----------------------------------------------------------------------------

    async def notify(self) -> None:
        with contextlib.suppress(CoordinationUnavailableError):
            await self._call(self._notify)

    def _notify(self) -> None:
        addresses = self._connect().execute("SELECT token, address FROM listeners").fetchall()
        gone = []
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for token, address in addresses:
                try:
                    sender.sendto(b"w", "\0" + address)
                except (ConnectionRefusedError, FileNotFoundError):
                    gone.append((token,))
                except OSError:
                    pass  # a full queue: the listener is awake anyway
        if gone:
            with self._write() as db:
                db.executemany("DELETE FROM listeners WHERE token=?", gone)

    async def listen(self, wake: Callable[[], None]) -> None:
        if not sys.platform.startswith("linux") or self._listener is not None:
            return  # abstract sockets are Linux's: elsewhere the leader's poll finds writes
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = f"quart_sched-{self.key}-{os.getpid()}-{id(self):x}"
        listener.bind("\0" + address)
        listener.setblocking(False)
        self._listener = listener

        def readable() -> None:
            try:
                while True:
                    listener.recv(64)
            except (BlockingIOError, OSError):
                pass
            wake()

        self._listening_on = asyncio.get_running_loop()
        self._listening_on.add_reader(listener.fileno(), readable)
        self._address = address
        await self._call(self._register_listener, address)

    def _register_listener(self, address: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO listeners (token, address, seen_at) VALUES (?, ?, ?)",
                (address, address, time.time()),
            )

    def _forget_listener(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM listeners WHERE token=?", (self._address,))
