"""Coordination on PostgreSQL: the lease and the ledger in two tables, wake-ups by NOTIFY.

The backend keeps two connections of its own, in autocommit mode, outside any pool the
jobs use: one for the lease and the ledger, one for ``LISTEN`` (psycopg's ``notifies()``
occupies its connection). Both need a real session, so a pooler in front of PostgreSQL
must run in session mode.

- **The lease** is one row of ``quart_sched_lease`` per key. Its times come from the
  server's clock (``now()``), so hosts with skewed clocks agree on expiry. The row is never
  deleted: a release only clears the holder, so the epoch never goes down.
- **The death signal** is a session-level advisory lock that the leader holds on its lease
  connection, and records holding (``locked``). When a standby gets that lock while such a
  lease stands, the holder's session is gone and it takes the lease at once; otherwise it
  waits for the lease to expire. (A leader that took an expired lease while the stopped
  holder's session still had the lock leads without it, records so, and takes it on a
  later renewal.) A stopped process (SIGSTOP) keeps its socket open for hours, so the lease
  connection sets ``idle_session_timeout`` to the TTL (PostgreSQL >= 14): the server then
  ends the idle session, and its lock, on its own.
- **The ledger** is ``quart_sched_fires``: a claim is one statement for any number of fires
  that inserts only while the claimer's epoch and token are those of the lease, holding the
  lease row ``FOR SHARE`` so that no takeover commits in between.

Any connection failure raises :class:`CoordinationUnavailableError` and drops the
connection; the next call connects again, so a server restart does not leave the backend
broken. psycopg is imported only when it is used: the package imports without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from .._gate import Fire
from .backend import (
    LEASE_TTL,
    Backend,
    CoordinationUnavailableError,
    Lease,
    LeaseLostError,
    Member,
    micros,
    utc,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import TupleRow

    Connection = AsyncConnection[TupleRow]

logger = logging.getLogger("quart_sched")

T = TypeVar("T")

#: Seconds between two sweeps of the ledger rows past their ``keep_until``.
PRUNE_INTERVAL = 60.0
#: Seconds between two attempts to listen again after the listening connection failed.
RELISTEN_DELAY = 1.0
#: Reconnect before using a lease connection idle for this share of the TTL: the server may
#: be ending it (``idle_session_timeout``), and a statement sent then would fail.
IDLE_SHARE = 0.75

DDL = (
    """
    CREATE TABLE IF NOT EXISTS quart_sched_lease (
        name text PRIMARY KEY,
        epoch bigint NOT NULL,
        host text,
        pid integer,
        token text,
        since timestamptz,
        expires_at timestamptz,
        locked boolean NOT NULL DEFAULT false
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS quart_sched_fires (
        name text,
        job_id text,
        run_time timestamptz,
        epoch bigint NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        keep_until timestamptz NOT NULL,
        finished boolean NOT NULL DEFAULT false,
        PRIMARY KEY (name, job_id, run_time)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS quart_sched_fires_keep_until
    ON quart_sched_fires (name, keep_until)
    """,
)

# Checked before any DDL: a role without CREATE on the schema (the default on the public
# schema since PostgreSQL 15) can use tables an administrator made.
TABLES_EXIST = """
SELECT to_regclass('quart_sched_lease') IS NOT NULL
   AND to_regclass('quart_sched_fires') IS NOT NULL
   AND to_regclass('quart_sched_fires_keep_until') IS NOT NULL
"""

# The lease as it stands, and (when asked) an attempt at the advisory lock in the same trip.
READ_LEASE = """
SELECT epoch, host, pid, token, since,
       coalesce(token IS NOT NULL AND expires_at > now(), false) AS live, locked,
       CASE WHEN %(try_lock)s THEN pg_try_advisory_lock(%(lock)s::bigint) ELSE false END
FROM quart_sched_lease WHERE name = %(name)s
"""

# Takes the lease with a new epoch if it is free, expired, or still the epoch ``dead``: the
# one this session saw when it got the advisory lock, held by a session that had the lock,
# so that session is gone. A lease taken since then by another standby is not overridden.
# The row lock of ON CONFLICT makes it atomic: of two standbys, the second sees the first's
# lease and takes nothing.
TAKE_LEASE = """
INSERT INTO quart_sched_lease AS l (name, epoch, host, pid, token, since, expires_at, locked)
VALUES (%(name)s, 1, %(host)s, %(pid)s, %(token)s, now(),
        now() + %(ttl)s * interval '1 second', %(locked)s)
ON CONFLICT (name) DO UPDATE
SET epoch = l.epoch + 1, host = excluded.host, pid = excluded.pid, token = excluded.token,
    since = excluded.since, expires_at = excluded.expires_at, locked = excluded.locked
WHERE (l.epoch = %(dead)s::bigint AND l.locked) OR l.token IS NULL OR l.expires_at < now()
RETURNING epoch, since
"""

RENEW_LEASE = """
UPDATE quart_sched_lease
SET expires_at = now() + %(ttl)s * interval '1 second', locked = %(locked)s
WHERE name = %(name)s AND epoch = %(epoch)s AND token = %(token)s
RETURNING true
"""

# Clears the holder but keeps the row, and with it the epoch.
RELEASE_LEASE = """
UPDATE quart_sched_lease
SET host = NULL, pid = NULL, token = NULL, since = NULL, expires_at = NULL, locked = false
WHERE name = %(name)s AND epoch = %(epoch)s AND token = %(token)s
"""

CURRENT_LEASE = """
SELECT epoch, host, pid, token, since FROM quart_sched_lease
WHERE name = %(name)s AND token IS NOT NULL AND expires_at > now()
"""

# The fence shared by CLAIM and UNFINISHED: one row if the caller's lease is current. FOR
# SHARE keeps a takeover (an UPDATE of that row) waiting until the statement ends.
_FENCE = """
current_lease AS (
    SELECT epoch FROM quart_sched_lease
    WHERE name = %(name)s AND epoch = %(epoch)s AND token = %(token)s
    FOR SHARE
)"""

# One statement for the whole batch: the positions (from 1) of the granted fires, or one
# NULL when the lease is not current (nothing is inserted then). Times travel as whole
# microseconds since the epoch, numbers being much cheaper than timestamps to send and
# to read back for thousands of fires.
CLAIM = f"""
WITH {_FENCE}, asked AS (
    SELECT f.job_id, f.n,
           timestamptz 'epoch' + f.run_us * interval '1 microsecond' AS run_time,
           timestamptz 'epoch' + f.keep_us * interval '1 microsecond' AS keep_until
    FROM unnest(%(job_ids)s::text[], %(run_us)s::bigint[], %(keep_us)s::bigint[])
         WITH ORDINALITY AS f(job_id, run_us, keep_us, n)
), granted AS (
    INSERT INTO quart_sched_fires (name, job_id, run_time, epoch, claimed_at, keep_until)
    SELECT %(name)s, a.job_id, a.run_time, current_lease.epoch, now(),
           coalesce(a.keep_until, now() + interval '7 days')
    FROM current_lease, asked AS a
    ON CONFLICT DO NOTHING
    RETURNING job_id, run_time
)
SELECT a.n FROM granted AS g JOIN asked AS a USING (job_id, run_time)
UNION ALL
SELECT NULL WHERE NOT EXISTS (SELECT FROM current_lease)
"""

# Moves the unfinished fires of earlier epochs to the caller's epoch: of two leaders in
# turn, only the first finds them under an earlier epoch.
UNFINISHED = f"""
WITH {_FENCE}, reclaimed AS (
    UPDATE quart_sched_fires AS f SET epoch = current_lease.epoch, claimed_at = now()
    FROM current_lease
    WHERE f.name = %(name)s AND f.job_id = ANY(%(job_ids)s::text[])
      AND f.epoch < current_lease.epoch AND NOT f.finished AND f.keep_until > now()
    RETURNING f.job_id, f.run_time, f.keep_until
)
SELECT job_id, run_time, keep_until FROM reclaimed
UNION ALL
SELECT NULL, NULL, NULL WHERE NOT EXISTS (SELECT FROM current_lease)
"""

FINISH = """
UPDATE quart_sched_fires AS f SET finished = true
FROM unnest(%(job_ids)s::text[], %(run_times)s::timestamptz[]) AS done(job_id, run_time)
WHERE f.name = %(name)s AND f.job_id = done.job_id AND f.run_time = done.run_time
"""

UNCLAIM = """
DELETE FROM quart_sched_fires AS f
USING unnest(%(job_ids)s::text[], %(run_times)s::timestamptz[]) AS back(job_id, run_time)
WHERE f.name = %(name)s AND f.epoch = %(epoch)s AND NOT f.finished
  AND f.job_id = back.job_id AND f.run_time = back.run_time
"""

PRUNE = "DELETE FROM quart_sched_fires WHERE name = %(name)s AND keep_until < now()"


class PostgresBackend(Backend):
    """A lease, a fire ledger and wake-ups on PostgreSQL.

    ``url`` is a libpq or SQLAlchemy URL (``postgresql://``, ``postgres://``,
    ``postgresql+psycopg://``, ``postgresql+asyncpg://``…): the driver suffix is dropped.

    Example::

        backend = PostgresBackend(key, url="postgresql+psycopg://app@db/app")
        await backend.open()
    """

    kind = "postgresql"

    def __init__(self, key: str, *, url: str, ttl: float = LEASE_TTL) -> None:
        super().__init__(key, ttl=ttl)
        self._url, self._location, self._secrets = _parse_url(url)
        params = _conninfo_params(self._url, self._location, self._secrets)
        self._names_itself = "application_name" in params
        self._lock_id = _advisory_id("lease", key)
        self._channel = f"quart_sched_{key}"
        self._serial = asyncio.Lock()  # one call at a time on the lease connection
        self._conn: Connection | None = None
        self._locked = False  # whether the lease session holds the advisory lock
        self._idle_limit: float | None = None  # the session's idle_session_timeout, in s
        self._used_at = 0.0
        self._next_prune = 0.0
        self._listen_conn: Connection | None = None
        self._relay: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        return self._location

    # -- connections -----------------------------------------------------------------

    async def open(self) -> None:
        await self._run("connecting", _nothing)

    async def close(self) -> None:
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.cancel()
            await asyncio.wait({relay})
            if not relay.cancelled() and relay.exception() is not None:
                logger.warning("The PostgreSQL wake-up listener failed: %r", relay.exception())
        listen_conn, self._listen_conn = self._listen_conn, None
        conn, self._conn, self._locked = self._conn, None, False
        for each in (listen_conn, conn):
            if each is not None:
                await _close_quietly(each)

    async def _connect(self, role: str) -> Connection:
        import psycopg

        name = None if self._names_itself else self._application(role)  # None: the URL's
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, application_name=name
        )

    def _application(self, role: str) -> str:
        """What ``pg_stat_activity`` shows, so a DBA can tell whose session it is."""
        return f"quart_sched {role} {self.key}"[:63]

    async def _lease_connection(self) -> Connection:
        if self._conn is not None and self._idle_too_long():
            await self._drop()
        if self._conn is None or self._conn.closed:
            self._locked = False
            conn = await self._connect("lease")
            try:
                await self._prepare(conn)
            except BaseException:
                await _close_quietly(conn)
                raise
            self._conn = conn
        return self._conn

    def _idle_too_long(self) -> bool:
        idle = time.monotonic() - self._used_at
        return self._idle_limit is not None and idle > self._idle_limit * IDLE_SHARE

    async def _prepare(self, conn: Connection) -> None:
        """Bound the session's idle life to the TTL, and create the tables if missing."""
        if conn.info.server_version >= 140000:
            milliseconds = str(max(1, round(self.ttl * 1000)))
            await conn.execute(
                "SELECT set_config('idle_session_timeout', %s, false)", [milliseconds]
            )
            self._idle_limit = self.ttl
        else:  # older servers: a stopped leader's lock lasts until TCP gives up
            self._idle_limit = None
        await _create_tables(conn)

    async def _drop(self) -> None:
        """Forget the lease connection (and with it the advisory lock): the next call
        connects again."""
        conn, self._conn, self._locked = self._conn, None, False
        if conn is not None:
            await _close_quietly(conn)

    async def _run(self, doing: str, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``work`` on the lease connection, one call at a time, within the TTL (an
        answer later than that is worthless to a lease). An outage drops the connection
        and raises :class:`CoordinationUnavailableError`."""
        async with self._serial:
            try:
                return await asyncio.wait_for(self._work(work), self.ttl)
            except Exception as error:
                if not _is_outage(error, self._conn):
                    raise
                await self._drop()
                raise CoordinationUnavailableError(self._explain(doing, error)) from error

    async def _work(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        conn = await self._lease_connection()
        try:
            return await work(conn)
        finally:
            self._used_at = time.monotonic()

    def _explain(self, doing: str, error: BaseException) -> str:
        reason = _scrub(str(error).strip(), self._secrets)
        reason = reason or f"no answer within {self.ttl:g} s"
        return f"PostgreSQL at {self._location} cannot be reached while {doing}: {reason}"

    # -- the lease -------------------------------------------------------------------

    async def acquire(self, me: Member) -> Lease | None:
        return await self._run("taking the lease", lambda conn: self._acquire(conn, me))

    async def _acquire(self, conn: Connection, me: Member) -> Lease | None:
        row = await _fetchone(
            conn,
            READ_LEASE,
            {"name": self.key, "try_lock": not self._locked, "lock": self._lock_id},
        )
        dead = None  # the epoch whose holder's session is known to be gone
        if row is not None:
            epoch, host, pid, token, since, live, holder_locked, got_lock = row
            self._locked = self._locked or got_lock
            if live and token == me.token:
                return Lease(epoch, host, pid, token, utc(since))
            if live and not (got_lock and holder_locked):
                # Its holder's session is alive, or it took the lease by expiry and has not
                # got the lock yet: the lock proves nothing, and is the holder's to take.
                await self._unlock(conn)
                return None
            dead = epoch if got_lock else None
        elif not self._locked:  # the key's first lease: lead with the lock from the start
            self._locked = await self._try_lock(conn)
        taken = await _fetchone(
            conn,
            TAKE_LEASE,
            {
                "name": self.key,
                "host": me.host,
                "pid": me.pid,
                "token": me.token,
                "ttl": self.ttl,
                "dead": dead,
                "locked": self._locked,
            },
        )
        if taken is None:
            await self._unlock(conn)
            return None
        epoch, since = taken
        return Lease(epoch, me.host, me.pid, me.token, utc(since))

    async def renew(self, lease: Lease) -> bool:
        return await self._run("renewing the lease", lambda conn: self._renew(conn, lease))

    async def _renew(self, conn: Connection, lease: Lease) -> bool:
        if not self._locked:  # a leader by expiry, or after a reconnect: take it when free
            self._locked = await self._try_lock(conn)
        params = self._fence(lease, ttl=self.ttl, locked=self._locked)
        if await _fetchone(conn, RENEW_LEASE, params) is None:
            await self._unlock(conn)  # let the new leader's session have it
            return False
        return True

    async def release(self, lease: Lease) -> None:
        async def release(conn: Connection) -> None:
            await conn.execute(RELEASE_LEASE, self._fence(lease))
            await self._unlock(conn)

        try:
            await self._run("releasing the lease", release)
        except CoordinationUnavailableError as error:
            logger.warning("%s; the lease will expire on its own", error)

    async def leader(self) -> Lease | None:
        async def leader(conn: Connection) -> Lease | None:
            row = await _fetchone(conn, CURRENT_LEASE, {"name": self.key})
            if row is None:
                return None
            epoch, host, pid, token, since = row
            return Lease(epoch, host, pid, token, utc(since))

        return await self._run("reading the lease", leader)

    async def _try_lock(self, conn: Connection) -> bool:
        row = await _fetchone(conn, "SELECT pg_try_advisory_lock(%s::bigint)", [self._lock_id])
        return row is not None and bool(row[0])

    async def _unlock(self, conn: Connection) -> None:
        if self._locked:
            await conn.execute("SELECT pg_advisory_unlock(%s::bigint)", [self._lock_id])
            self._locked = False

    def _fence(self, lease: Lease, **extra: Any) -> dict[str, Any]:
        return {"name": self.key, "epoch": lease.epoch, "token": lease.token, **extra}

    # -- the ledger ------------------------------------------------------------------

    async def claim(self, lease: Lease, fires: Sequence[Fire]) -> Collection[Fire]:
        return await self._run("claiming fires", lambda conn: self._claim(conn, lease, fires))

    async def _claim(self, conn: Connection, lease: Lease, fires: Sequence[Fire]) -> list[Fire]:
        await self._prune(conn)  # before the claim: a failure here must not lose granted rows
        params = self._fence(
            lease,
            job_ids=[fire.job_id for fire in fires],
            run_us=[micros(fire.run_time) for fire in fires],
            keep_us=[None if f.keep_until is None else micros(f.keep_until) for f in fires],
        )
        rows = await (await conn.execute(CLAIM, params)).fetchall()
        if any(n is None for (n,) in rows):
            raise LeaseLostError(f"epoch {lease.epoch} is not the current lease")
        granted: dict[tuple[str, datetime], Fire] = {}
        for (n,) in sorted(rows):
            fire = fires[n - 1]
            granted.setdefault((fire.job_id, fire.run_time), fire)  # a fire asked twice: once
        return list(granted.values())

    async def _prune(self, conn: Connection) -> None:
        """Delete ledger rows past ``keep_until``, at most once a :data:`PRUNE_INTERVAL`."""
        if time.monotonic() >= self._next_prune:
            await conn.execute(PRUNE, {"name": self.key})
            self._next_prune = time.monotonic() + PRUNE_INTERVAL

    async def finish(self, fires: Sequence[Fire]) -> None:
        """Best effort: an outage is logged, and a fire left unfinished is offered again
        only to a later leader, by :meth:`unfinished`."""
        if not fires:
            return
        params = {
            "name": self.key,
            "job_ids": [fire.job_id for fire in fires],
            "run_times": [utc(fire.run_time) for fire in fires],
        }

        async def finish(conn: Connection) -> None:
            await conn.execute(FINISH, params)

        try:
            await self._run("marking fires finished", finish)
        except CoordinationUnavailableError as error:
            logger.warning("%s", error)

    async def unclaim(self, lease: Lease, fires: Sequence[Fire]) -> None:
        if not fires:
            return
        params = {
            "name": self.key,
            "epoch": lease.epoch,
            "job_ids": [fire.job_id for fire in fires],
            "run_times": [utc(fire.run_time) for fire in fires],
        }

        async def unclaim(conn: Connection) -> None:
            await conn.execute(UNCLAIM, params)

        try:
            await self._run("giving back fires claimed ahead", unclaim)
        except CoordinationUnavailableError as error:
            logger.warning("%d run(s) claimed ahead not given back: %s", len(fires), error)

    async def unfinished(self, lease: Lease, job_ids: Collection[str]) -> list[Fire]:
        async def unfinished(conn: Connection) -> list[Fire]:
            params = self._fence(lease, job_ids=list(job_ids))
            rows = await (await conn.execute(UNFINISHED, params)).fetchall()
            if any(job_id is None for job_id, _, _ in rows):
                raise LeaseLostError(f"epoch {lease.epoch} is not the current lease")
            fires = [Fire(job_id, utc(at), keep_until=utc(keep)) for job_id, at, keep in rows]
            return sorted(fires, key=lambda fire: (fire.run_time, fire.job_id))

        return await self._run("reading unfinished fires", unfinished)

    # -- wake-ups --------------------------------------------------------------------

    async def notify(self) -> None:
        """Best effort: the leader also polls, so an outage is only logged."""

        async def notify(conn: Connection) -> None:
            from psycopg import sql

            await conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(self._channel)))

        try:
            await self._run("waking the leader", notify)
        except CoordinationUnavailableError as error:
            logger.warning("%s", error)

    async def listen(self, wake: Callable[[], None]) -> None:
        conn = await self._listening_connection()
        self._relay = asyncio.create_task(self._relay_notifications(conn, wake))

    async def _listening_connection(self) -> Connection:
        """A second connection, LISTENing on the key's channel."""
        from psycopg import sql

        async def connect() -> Connection:
            conn = await self._connect("listen")
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except BaseException:
                await _close_quietly(conn)
                raise
            return conn

        try:
            self._listen_conn = await asyncio.wait_for(connect(), self.ttl)
        except Exception as error:
            if not _is_outage(error, None):
                raise
            raise CoordinationUnavailableError(self._explain("listening", error)) from error
        return self._listen_conn

    async def _relay_notifications(self, conn: Connection, wake: Callable[[], None]) -> None:
        """Call ``wake()`` per notification until cancelled. After an outage, listen again
        and wake once: what was sent meanwhile is lost. Ends once :meth:`close` takes it
        away, even if a cancellation was swallowed (``wait_for`` may drop one that comes
        as the connection it waits for is made)."""
        me = asyncio.current_task()
        while self._relay is me:
            try:
                async for _ in conn.notifies():
                    wake()
            except Exception as error:
                if not _is_outage(error, conn):
                    raise
                logger.warning("%s; listening again", self._explain("listening", error))
            await _close_quietly(conn)
            conn = await self._listen_again()
            wake()

    async def _listen_again(self) -> Connection:
        me = asyncio.current_task()
        while self._relay is me:
            await asyncio.sleep(RELISTEN_DELAY)
            try:
                return await self._listening_connection()
            except CoordinationUnavailableError:
                continue
        raise asyncio.CancelledError  # closed meanwhile


async def _nothing(conn: Connection) -> None:
    """The work of :meth:`PostgresBackend.open`: connecting (and preparing) is all."""


async def _fetchone(conn: Connection, query: str, params: Any) -> TupleRow | None:
    return await (await conn.execute(query, params)).fetchone()


async def _create_tables(conn: Connection) -> None:
    """Create the tables if missing. Two processes starting at once would race (a unique
    violation in the catalogue): a transaction-scoped advisory lock lets one in at a time."""
    exist = await _fetchone(conn, TABLES_EXIST, None)
    if exist is not None and exist[0]:
        return
    from psycopg.errors import InsufficientPrivilege

    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s::bigint)", [_advisory_id("ddl")])
            for statement in DDL:
                await conn.execute(statement)
    except InsufficientPrivilege as error:
        # Unavailable rather than a crash: once an owner creates them, the next call works.
        raise CoordinationUnavailableError(
            f"cannot create the tables quart_sched_lease and quart_sched_fires ({error}): "
            "grant CREATE on the schema to this role, or create them once as its owner"
        ) from error


async def _close_quietly(conn: Connection) -> None:
    try:
        await conn.close()
    except Exception:  # closing a broken connection: nothing left to do
        logger.debug("closing a PostgreSQL connection failed", exc_info=True)


def _is_outage(error: BaseException, conn: Connection | None) -> bool:
    """Whether ``error`` means the server cannot be reached (rather than a bug)."""
    import psycopg

    if isinstance(error, (psycopg.OperationalError, OSError, asyncio.TimeoutError)):
        return True
    return isinstance(error, psycopg.Error) and conn is not None and conn.broken


def _advisory_id(*parts: str) -> int:
    """A bigint advisory lock id, namespaced so that it does not meet the app's own."""
    digest = hashlib.sha256(":".join(("quart_sched", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _parse_url(url: str) -> tuple[str, str, tuple[str, ...]]:
    """(the libpq URL, the URL without password, the password's spellings) of ``url``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in ("postgresql", "postgres"):
        raise ValueError(
            f"{scheme!r} is not a PostgreSQL URL scheme: use postgresql://user@host/database"
        )
    parts = urlsplit(f"postgresql://{rest}")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    params = [p for p in parts.query.split("&") if p]
    passwords = [password] + [p.partition("=")[2] for p in params if p.startswith("password=")]
    kept = [p for p in params if not p.startswith("password=")]
    netloc = f"{user}@{hostport}" if user else hostport
    location = urlunsplit((scheme, netloc, parts.path, "&".join(kept), ""))
    secrets = {spelling for p in passwords for spelling in (p, unquote(p)) if spelling}
    return f"postgresql://{rest}", location, tuple(secrets)


def _conninfo_params(url: str, location: str, secrets: Sequence[str]) -> dict[str, Any]:
    """The connection parameters of ``url`` (checked by libpq: a bad URL fails here)."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as error:
        raise ImportError(
            "PostgreSQL coordination needs psycopg: pip install 'quart-sched[postgresql]'"
        ) from error
    try:
        return conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ValueError(
            f"invalid PostgreSQL URL {location}: {_scrub(str(error), secrets)}"
        ) from None


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` without the password (libpq's messages do not quote it: a safety net)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
