"""Coordination of processes on any number of hosts through one Redis server.

Keys, all under ``quart_sched:<key>:`` (the key is 16 hex digits):

- ``epoch``: a counter that only grows (``INCR``); each acquisition takes the next value.
- ``lease``: a hash (``epoch host pid token since client``) that expires ``ttl`` after the
  last renewal (``PEXPIRE``): the Redis key's expiry is the lease's expiry, on the
  server's clock. ``since`` is the server's ``TIME`` in microseconds.
- ``fire:<job id>:<run time in µs>``: one claimed fire, holding the epoch that claimed it
  (or ``finished``), kept until the fire's ``keep_until`` (``PEXPIREAT``).
- ``claims:<job id>``: a sorted set of the job's unfinished claims (run time in µs, scored
  by keep_until in ms), so that :meth:`RedisBackend.unfinished` reads a few members
  instead of scanning the keyspace.
- ``wake``: the Pub/Sub channel of :meth:`RedisBackend.notify`.

Every step that reads and then writes is one Lua script, so it is atomic on the server
and one round trip: a claim of thousands of fires checks the epoch and writes them all
in one call.

**The death signal.** Redis has no lock that ends with its process, but it drops a client
whose socket closes. The lease records the leader's ``CLIENT ID``; a standby that finds
the lease held asks ``CLIENT LIST ID <id>`` whether that client is still connected, and
takes over at once if not. A leader that is alive but stuck (paused, its socket still
open) keeps the lease until it expires. Where ``CLIENT LIST`` is refused (ACLs, managed
services), the expiry is the only signal.

The backend has its own connections, shared with nothing: one for the lease and the
ledger (a single connection, so that the ``CLIENT ID`` it records is the one a standby
sees), one for Pub/Sub. redis-py is imported only when a backend is made, so the package
works without it (``pip install 'quart-sched[redis]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from .._gate import Fire
from .._urls import without_password
from .backend import (
    ACQUIRE_INTERVAL,
    LEASE_TTL,
    Backend,
    CoordinationUnavailableError,
    Lease,
    LeaseLostError,
    Member,
    from_micros,
    micros,
    utc,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

logger = logging.getLogger("quart_sched")
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_MILLISECOND = timedelta(milliseconds=1)
#: Seconds the listener waits for a message before looking again (so a close is quick).
_LISTEN_POLL = 1.0

# The lease's fields, in the order the scripts return them after a "mine" flag.
_LEASE_FIELDS = ("epoch", "host", "pid", "token", "since", "client")

# KEYS: lease, epoch counter. ARGV: token, host, pid, client id, ttl ms, and, to take over
# from a holder whose connection is gone, the epoch and client id it was seen with ("" else).
# Returns {1 if the lease is the caller's, then the lease's fields}.
_ACQUIRE = """
local function lease(mine)
  local fields = redis.call('HMGET', KEYS[1], 'epoch', 'host', 'pid', 'token', 'since', 'client')
  table.insert(fields, 1, mine)
  return fields
end
local held = redis.call('HMGET', KEYS[1], 'epoch', 'token', 'client')
if held[1] then
  if held[2] == ARGV[1] then
    redis.call('HSET', KEYS[1], 'client', ARGV[4])
    return lease(1)
  end
  if ARGV[6] == '' or held[1] ~= ARGV[6] or held[3] ~= ARGV[7] then
    return lease(0)
  end
end
local epoch = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', epoch, 'host', ARGV[2], 'pid', ARGV[3],
  'token', ARGV[1], 'since', now[1] .. string.format('%06d', now[2]), 'client', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return lease(1)
"""

# KEYS: lease. ARGV: epoch, token, ttl ms, client id. Returns 1 if renewed, 0 if not ours.
# The client id is written again: a leader that reconnected has a new one.
_RENEW = """
local held = redis.call('HMGET', KEYS[1], 'epoch', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'client', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: lease. ARGV: epoch, token. Deletes the lease if it is still this one.
_RELEASE = """
local held = redis.call('HMGET', KEYS[1], 'epoch', 'token')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# Shared by the ledger's scripts: the fence, the server's clock in ms, and key names.
_LEDGER = """
local prefix, epoch = ARGV[1], ARGV[2]
local held = redis.call('HMGET', KEYS[1], 'epoch', 'token')
if held[1] ~= epoch or held[2] ~= ARGV[3] then return false end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function fire_key(job, run) return prefix .. 'fire:' .. job .. ':' .. run end
local function index_key(job) return prefix .. 'claims:' .. job end
"""

# KEYS: lease. ARGV: prefix, epoch, token, then (job id, run µs, keep_until ms or "") per
# fire. Returns the 0-based indexes of the fires granted, or nil when the epoch is not
# current (nothing written then).
_CLAIM = (
    _LEDGER
    + """
local week = 7 * 24 * 3600 * 1000
local granted = {}
for i = 4, #ARGV, 3 do
  local job, run, keep = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]) or now + week
  local fire = fire_key(job, run)
  if redis.call('SET', fire, epoch, 'NX') then
    redis.call('PEXPIREAT', fire, keep)
    local index = index_key(job)
    redis.call('ZADD', index, keep, run)
    local ttl = redis.call('PTTL', index)
    if ttl < 0 or now + ttl < keep then redis.call('PEXPIREAT', index, keep) end
    granted[#granted + 1] = (i - 4) / 3
  end
end
return granted
"""
)

# KEYS: lease. ARGV: prefix, epoch, token, then job ids. Re-claims, under this epoch, the
# fires of those jobs claimed under an earlier one and never finished; returns them as
# {job id, run µs, keep_until ms, ...}, or nil when the epoch is not current.
_UNFINISHED = (
    _LEDGER
    + """
local found = {}
for i = 4, #ARGV do
  local job = ARGV[i]
  local index = index_key(job)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  local claims = redis.call('ZRANGE', index, 0, -1, 'WITHSCORES')
  for j = 1, #claims, 2 do
    local run, keep = claims[j], claims[j + 1]
    local fire = fire_key(job, run)
    local claimed = tonumber(redis.call('GET', fire) or '')
    if not claimed then
      redis.call('ZREM', index, run)
    elseif claimed < tonumber(epoch) then
      redis.call('SET', fire, epoch, 'KEEPTTL')
      found[#found + 1] = job
      found[#found + 1] = run
      found[#found + 1] = keep
    end
  end
end
return found
"""
)

# ARGV: prefix, then (job id, run µs) per fire. Marks each finished (keeping its expiry)
# and drops it from its job's unfinished claims.
_FINISH = """
local prefix = ARGV[1]
for i = 2, #ARGV, 2 do
  local job, run = ARGV[i], ARGV[i + 1]
  redis.call('SET', prefix .. 'fire:' .. job .. ':' .. run, 'finished', 'XX', 'KEEPTTL')
  redis.call('ZREM', prefix .. 'claims:' .. job, run)
end
return 0
"""

# ARGV: prefix, epoch, then (job id, run µs) per fire. Deletes the fires still claimed by
# that epoch and not finished.
_UNCLAIM = """
local prefix, epoch = ARGV[1], ARGV[2]
for i = 3, #ARGV, 2 do
  local job, run = ARGV[i], ARGV[i + 1]
  local fire = prefix .. 'fire:' .. job .. ':' .. run
  if redis.call('GET', fire) == epoch then
    redis.call('DEL', fire)
    redis.call('ZREM', prefix .. 'claims:' .. job, run)
  end
end
return 0
"""


def millis(when: datetime) -> int:
    return (utc(when) - _EPOCH) // _MILLISECOND


def from_millis(value: str | float) -> datetime:
    return _EPOCH + int(float(value)) * _MILLISECOND  # a sorted set's score may be "1e+12"


class RedisBackend(Backend):
    """Lease, ledger and wake-ups for processes on any hosts sharing a Redis server (see
    the module). Needs Redis 6.0 or later (6.2 for the death signal)."""

    kind = "redis"

    def __init__(self, key: str, *, url: str, ttl: float = LEASE_TTL) -> None:
        super().__init__(key, ttl=ttl)
        try:
            import redis  # noqa: F401  (fail here, with the fix, rather than at start)
        except ImportError as exc:
            raise ImportError(
                "Coordination through Redis needs redis-py: pip install 'quart-sched[redis]'"
            ) from exc
        self.url = url
        self._password = urlsplit(url).password or ""
        self._prefix = f"quart_sched:{key}:"
        self._lease_key = self._prefix + "lease"
        self._channel = self._prefix + "wake"
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        #: This backend's CLIENT ID, "" if the server refuses to say, None until asked
        #: (again after an error: a reconnected connection has a new one).
        self._client_id: str | None = None
        #: False once the server refused CLIENT LIST: the lease's expiry is the only signal.
        self._can_list_clients = True

    @property
    def location(self) -> str:
        return without_password(self.url)

    # connections -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._redis is not None:
            return
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: the coordinator calls again on its own schedule,
        # and a retry would reconnect under a CLIENT ID the call did not record.
        # Timeouts well under the TTL: a silent server cannot hold a call past the lease.
        client = Redis.from_url(
            self.url,
            single_connection_client=True,
            decode_responses=True,
            socket_timeout=self.ttl / 2,
            socket_connect_timeout=self.ttl / 2,
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {
            name: client.register_script(text)
            for name, text in [
                ("acquire", _ACQUIRE),
                ("renew", _RENEW),
                ("release", _RELEASE),
                ("claim", _CLAIM),
                ("unfinished", _UNFINISHED),
                ("finish", _FINISH),
                ("unclaim", _UNCLAIM),
            ]
        }
        self._redis = client
        try:
            # Loaded now, so that the first claim is one EVALSHA rather than a refused
            # EVALSHA, a SCRIPT LOAD and a second EVALSHA (redis-py loads on NOSCRIPT,
            # which also covers a server restarted since).
            for script in self._scripts.values():
                await self._run(client.script_load(script.script))
        except CoordinationUnavailableError:
            await self.close()
            raise

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        pubsub, self._pubsub = self._pubsub, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        if pubsub is not None:
            await self._quietly(pubsub.aclose())  # type: ignore[no-untyped-call,unused-ignore]
        client, self._redis = self._redis, None
        if client is not None:
            await self._quietly(client.aclose(close_connection_pool=True))

    async def _quietly(self, closing: Awaitable[object]) -> None:
        """Await a close that must not raise: the server may be gone already."""
        try:
            await closing
        except Exception as exc:
            logger.debug("Closing the Redis coordination connection: %s", exc)

    @property
    def _client(self) -> Redis:
        if self._redis is None:
            raise CoordinationUnavailableError(f"Redis coordination at {self.location} is closed")
        return self._redis

    async def _run(self, call: Awaitable[T], *, passing: tuple[type[Exception], ...] = ()) -> T:
        """Await one call to Redis. An outage, or a refusal (out of memory, a read-only
        replica, an ACL), becomes :class:`CoordinationUnavailableError`: either way
        coordination cannot go on until an operator or the network fixes it. Errors of
        the ``passing`` types are the caller's to handle."""
        from redis.exceptions import ConnectionError, ResponseError, TimeoutError

        try:
            return await call
        except passing:
            raise
        except (ConnectionError, TimeoutError, OSError, ResponseError) as exc:
            self._client_id = None  # a new connection gets a new CLIENT ID
            what = "refused the call" if isinstance(exc, ResponseError) else "cannot be reached"
            message = str(exc).replace(self._password, "***") if self._password else str(exc)
            raise CoordinationUnavailableError(
                f"Redis at {self.location} {what}: {type(exc).__name__}: {message}"
            ) from exc

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._run(self._scripts[name](keys=keys, args=args, client=self._client))

    async def _own_client_id(self) -> str:
        """The CLIENT ID of the lease connection, recorded in the lease."""
        from redis.exceptions import ResponseError

        if self._client_id is None:
            try:
                self._client_id = str(
                    await self._run(self._client.client_id(), passing=(ResponseError,))
                )
            except ResponseError as exc:  # refused by an ACL: no death signal for us
                logger.info("Redis refused CLIENT ID (%s): leadership ends by expiry", exc)
                self._client_id = ""
        return self._client_id

    async def _connected(self, client_id: str) -> bool:
        """Whether the client ``client_id`` is still connected (True when unknown)."""
        from redis.exceptions import ResponseError

        if not client_id or not self._can_list_clients:
            return True
        try:
            listed = self._client.client_list(client_id=[client_id])
            return bool(await self._run(listed, passing=(ResponseError,)))
        except ResponseError as exc:  # ACLs, managed services, Redis < 6.2
            self._can_list_clients = False
            logger.info(
                "Redis refused CLIENT LIST ID (%s): a leader that dies is replaced when its "
                "lease expires (%s s), not at once",
                exc,
                self.ttl,
            )
            return True

    # the lease ---------------------------------------------------------------------------

    async def acquire(self, me: Member) -> Lease | None:
        held = await self._acquire(me)
        if held.mine:
            return held.lease
        if await self._connected(held.client_id):
            return None
        gone = held
        held = await self._acquire(me, gone=gone)
        if not held.mine:
            return None  # another standby was quicker
        logger.info(
            "Took the lease from %s pid %s at once: its Redis connection closed",
            gone.lease.host,
            gone.lease.pid,
        )
        return held.lease

    async def _acquire(self, me: Member, gone: _Held | None = None) -> _Held:
        """The acquire script: takes the lease if free, or if it is still ``gone``'s."""
        args = [me.token, me.host, me.pid, await self._own_client_id(), self._ttl_ms]
        args += [gone.lease.epoch, gone.client_id] if gone is not None else ["", ""]
        keys = [self._lease_key, self._prefix + "epoch"]
        return _Held.parse(await self._script("acquire", keys, args))

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def renew(self, lease: Lease) -> bool:
        args = [lease.epoch, lease.token, self._ttl_ms, await self._own_client_id()]
        return bool(await self._script("renew", [self._lease_key], args))

    async def release(self, lease: Lease) -> None:
        try:
            await self._script("release", [self._lease_key], [lease.epoch, lease.token])
        except CoordinationUnavailableError as exc:
            logger.warning("Could not release leadership (%s): it expires on its own", exc)

    async def leader(self) -> Lease | None:
        fields = await self._run(self._client.hmget(self._lease_key, list(_LEASE_FIELDS)))
        return _Held.parse([0, *fields]).lease if fields[0] is not None else None

    # the ledger --------------------------------------------------------------------------

    def _fenced(self, lease: Lease) -> list[Any]:
        return [self._prefix, lease.epoch, lease.token]

    async def claim(self, lease: Lease, fires: Sequence[Fire]) -> Collection[Fire]:
        if not fires:
            return []
        args = self._fenced(lease)
        for fire in fires:
            keep = millis(fire.keep_until) if fire.keep_until is not None else ""
            args += [fire.job_id, micros(fire.run_time), keep]
        granted = await self._script("claim", [self._lease_key], args)
        if granted is None:
            raise LeaseLostError(f"epoch {lease.epoch} is not current")
        return [fires[index] for index in granted]

    async def finish(self, fires: Sequence[Fire]) -> None:
        if not fires:
            return
        args: list[Any] = [self._prefix]
        for fire in fires:
            args += [fire.job_id, micros(fire.run_time)]
        await self._script("finish", [], args)

    async def unclaim(self, lease: Lease, fires: Sequence[Fire]) -> None:
        if not fires:
            return
        args: list[Any] = [self._prefix, lease.epoch]
        for fire in fires:
            args += [fire.job_id, micros(fire.run_time)]
        try:
            await self._script("unclaim", [], args)
        except CoordinationUnavailableError as exc:
            logger.warning("%d run(s) claimed ahead not given back: %s", len(fires), exc)

    async def unfinished(self, lease: Lease, job_ids: Collection[str]) -> list[Fire]:
        if not job_ids:
            return []
        args = [*self._fenced(lease), *job_ids]
        found = await self._script("unfinished", [self._lease_key], args)
        if found is None:
            raise LeaseLostError(f"epoch {lease.epoch} is not current")
        fires = [
            Fire(job_id, from_micros(run), from_millis(keep))
            for job_id, run, keep in zip(found[::3], found[1::3], found[2::3], strict=True)
        ]
        return sorted(fires, key=lambda fire: (fire.run_time, fire.job_id))

    # wake-ups ----------------------------------------------------------------------------

    async def notify(self) -> None:
        try:
            await self._run(self._client.publish(self._channel, "wake"))
        except CoordinationUnavailableError as exc:
            logger.debug("Could not notify the leader (%s): it finds the change by polling", exc)

    async def listen(self, wake: Callable[[], None]) -> None:
        if self._listener is not None:
            return
        pubsub = self._client.pubsub()
        try:
            await self._run(pubsub.subscribe(self._channel))
            await self._subscribed(pubsub)
        except BaseException:
            await self._quietly(pubsub.aclose())  # type: ignore[no-untyped-call,unused-ignore]
            raise
        self._pubsub = pubsub
        self._listener = asyncio.create_task(
            self._pump(pubsub, wake), name=f"quart_sched-redis-listener-{self.key}"
        )

    async def _subscribed(self, pubsub: PubSub) -> None:
        """Wait for the server's confirmation: a notification sent after :meth:`listen`
        returns must not be lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ttl
        while loop.time() < deadline:
            message = await self._run(pubsub.get_message(timeout=deadline - loop.time()))
            if message is not None and message["type"] == "subscribe":
                return
        raise CoordinationUnavailableError(
            f"Redis at {self.location} did not confirm the subscription within {self.ttl} s"
        )

    async def _pump(self, pubsub: PubSub, wake: Callable[[], None]) -> None:
        """Call ``wake`` per message until cancelled, through outages: redis-py
        reconnects and subscribes again, and a wake after a reconnection stands for the
        notifications that were lost meanwhile."""
        from redis.exceptions import RedisError

        cut_off = False
        # Until close() takes this listener away: a cancellation swallowed by redis-py (a
        # socket timeout firing at the same moment becomes a TimeoutError) must not keep
        # it going.
        while self._pubsub is pubsub:
            try:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_LISTEN_POLL
                )
            except (RedisError, OSError) as exc:
                if not cut_off:
                    logger.info("Redis wake-ups interrupted (%s): polling meanwhile", exc)
                cut_off = True
                await asyncio.sleep(ACQUIRE_INTERVAL)
                continue
            if cut_off or message is not None:
                cut_off = False
                wake()


class _Held(NamedTuple):
    """The lease as the acquire script answers it."""

    mine: bool  # the caller's (just taken, or held already)
    lease: Lease
    client_id: str  # of the holder's lease connection; "" if unknown

    @classmethod
    def parse(cls, reply: list[Any]) -> _Held:
        """From a flag, then :data:`_LEASE_FIELDS`."""
        mine, epoch, host, pid, token, since, client_id = reply
        lease = Lease(int(epoch), host, int(pid), token, from_micros(since))
        return cls(mine == 1, lease, client_id or "")
