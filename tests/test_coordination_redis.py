"""What the Redis backend does beyond the contract: its death signal (a closed connection,
not a stopped renewal), the ledger's expiries, one command per claim, outages.

Tests that stop the server or change its settings run their own ``redis-server`` on a free
port; the others use this machine's Redis on unique keys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from quart_sched._coordination.backend import (
    CoordinationUnavailableError,
    Lease,
    LeaseLostError,
    Member,
)
from quart_sched._gate import Fire

from coordination_support import REDIS_URL, require_server, server_answers
from support import free_port, wait_until

pytestmark = pytest.mark.timeout(60)

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'quart-sched[redis]')")

from redis.asyncio import Redis  # noqa: E402

from quart_sched._coordination.redis import RedisBackend  # noqa: E402

RUN_TIME = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def member(name: str) -> Member:
    return Member(host=f"host-{name}", pid=1000 + ord(name[0]), token=uuid.uuid4().hex)


def fire(job_id: str, keep: timedelta | None = timedelta(hours=1)) -> Fire:
    keep_until = datetime.now(timezone.utc) + keep if keep is not None else None
    return Fire(job_id, RUN_TIME, keep_until=keep_until)


class Server:
    """A ``redis-server`` of this test's own, which it may stop and start again."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, credentials: str = "") -> str:
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not server_answers("127.0.0.1", self.port):
            assert self.process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    """Starts private Redis servers (skipped, or failed in CI, without redis-server)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "Redis (redis-server and redis-cli) is not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started: list[Server] = []

    def start(*args: str) -> Server:
        started.append(Server(*args))
        started[-1].start()
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., RedisBackend]]:
    """Backends on one fresh key (opened by the test), closed at the end."""
    key = uuid.uuid4().hex[:16]
    made: list[RedisBackend] = []

    def factory(url: str = REDIS_URL, ttl: float = 2.0) -> RedisBackend:
        if url == REDIS_URL:
            require_server("redis")
        made.append(RedisBackend(key, url=url, ttl=ttl))
        return made[-1]

    yield factory
    for backend in made:
        await backend.close()


@pytest.fixture
async def admin() -> AsyncIterator[Callable[..., Redis]]:
    """Plain redis-py clients, to look at what the backend wrote and to kill connections."""
    made: list[Redis] = []

    def factory(url: str = REDIS_URL) -> Redis:
        made.append(Redis.from_url(url, decode_responses=True))
        return made[-1]

    yield factory
    for client in made:
        await client.aclose()


async def held_lease_client(admin_client: Redis, backend: RedisBackend) -> str:
    """The CLIENT ID the lease records (the holder's lease connection)."""
    client_id = await admin_client.hget(f"quart_sched:{backend.key}:lease", "client")
    assert client_id
    return str(client_id)


async def acquire_within(backend: RedisBackend, me: Member, seconds: float) -> Lease | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lease = await backend.acquire(me)
        if lease is not None:
            return lease
        await asyncio.sleep(0.05)
    return None


# the death signal ------------------------------------------------------------------------


async def test_a_live_holder_that_stops_renewing_keeps_the_lease_until_its_ttl(
    backends: Callable[..., RedisBackend],
) -> None:
    ttl = 1.5
    holder, standby = backends(ttl=ttl), backends(ttl=ttl)
    await holder.open()
    await standby.open()
    first = await holder.acquire(member("a"))
    taken = time.monotonic()
    assert first is not None
    # The holder stays connected and never renews: only the expiry ends its lease.
    second = await acquire_within(standby, member("b"), ttl * 5)
    assert second is not None and second.epoch > first.epoch
    assert time.monotonic() - taken >= ttl * 0.9, "a connected holder lost the lease early"


async def test_a_holder_whose_connection_is_killed_loses_the_lease_at_once(
    backends: Callable[..., RedisBackend], admin: Callable[..., Redis]
) -> None:
    holder, standby = backends(ttl=30.0), backends(ttl=30.0)
    await holder.open()
    await standby.open()
    first = await holder.acquire(member("a"))
    assert first is not None
    assert await standby.acquire(member("b")) is None
    client = admin()
    await client.client_kill_filter(_id=await held_lease_client(client, holder))
    second = await acquire_within(standby, member("b"), 3.0)  # the TTL is 30 s
    assert second is not None and second.epoch > first.epoch
    # The old holder finds out at its next renewals: first the closed connection, then
    # (reconnected) a lease that is not its own any more.
    outcomes: list[bool | None] = []
    for _ in range(2):
        try:
            outcomes.append(await holder.renew(first))
        except CoordinationUnavailableError:
            outcomes.append(None)
    assert outcomes[-1] is False
    with pytest.raises(LeaseLostError):
        await holder.claim(first, [fire("j")])


async def test_a_leader_that_reconnects_records_its_new_connection(
    backends: Callable[..., RedisBackend], admin: Callable[..., Redis]
) -> None:
    """A killed connection that comes back before a standby looks is not a death."""
    holder, standby = backends(ttl=30.0), backends(ttl=30.0)
    await holder.open()
    await standby.open()
    lease = await holder.acquire(member("a"))
    assert lease is not None
    client = admin()
    killed = await held_lease_client(client, holder)
    await client.client_kill_filter(_id=killed)
    with pytest.raises(CoordinationUnavailableError):
        await holder.renew(lease)
    assert await holder.renew(lease)
    assert await held_lease_client(client, holder) != killed
    assert await standby.acquire(member("b")) is None


async def test_without_client_list_a_dead_holder_is_replaced_at_its_ttl(
    server: Callable[..., Server],
    backends: Callable[..., RedisBackend],
    admin: Callable[..., Redis],
) -> None:
    """Managed services often refuse CLIENT LIST: the lease still moves, by expiry."""
    redis = server()
    client = admin(redis.url())
    await client.acl_setuser(
        "app",
        enabled=True,
        passwords=["+secret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-client|list"],
    )
    ttl = 1.5
    url = redis.url("app:secret@")
    holder, standby = backends(url, ttl=ttl), backends(url, ttl=ttl)
    await holder.open()
    await standby.open()
    first = await holder.acquire(member("a"))
    assert first is not None
    await client.client_kill_filter(_id=await held_lease_client(client, holder))
    killed = time.monotonic()
    second = await acquire_within(standby, member("b"), ttl * 5)
    assert second is not None and second.epoch > first.epoch
    assert time.monotonic() - killed >= ttl * 0.9, "took over without the death signal"


# the ledger ------------------------------------------------------------------------------


async def test_fire_keys_expire_at_their_keep_until(
    backends: Callable[..., RedisBackend], admin: Callable[..., Redis]
) -> None:
    backend = backends()
    await backend.open()
    lease = await backend.acquire(member("a"))
    assert lease is not None
    kept, unsaid = fire("kept", timedelta(hours=1)), fire("unsaid", None)
    assert set(await backend.claim(lease, [kept, unsaid])) == {kept, unsaid}
    client = admin()
    micros = (RUN_TIME - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    prefix = f"quart_sched:{backend.key}:"
    hour, week = 3600_000, 7 * 24 * 3600_000
    assert hour - 60_000 < await client.pttl(f"{prefix}fire:kept:{micros}") <= hour
    # No keep_until: remembered for a week.
    assert week - 60_000 < await client.pttl(f"{prefix}fire:unsaid:{micros}") <= week
    # The job's index of claims does not outlive them either, finished or not.
    assert 0 < await client.pttl(f"{prefix}claims:kept") <= hour
    await backend.finish([kept])
    assert hour - 60_000 < await client.pttl(f"{prefix}fire:kept:{micros}") <= hour


async def test_a_claim_of_2000_fires_is_one_command(
    server: Callable[..., Server],
    backends: Callable[..., RedisBackend],
    admin: Callable[..., Redis],
) -> None:
    """Counted by the server: its slow log, told to log every command, names the client
    each command came from (commands a script runs come from no address)."""
    redis = server("--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000")
    backend = backends(redis.url())
    await backend.open()
    lease = await backend.acquire(member("a"))
    assert lease is not None
    client = admin(redis.url())
    [info] = await client.client_list(client_id=[await held_lease_client(client, backend)])
    await client.slowlog_reset()
    fires = [fire(f"job-{i}") for i in range(2000)]
    assert len(await backend.claim(lease, fires)) == 2000
    sent = [
        str(entry["command"], "utf-8", "replace")
        for entry in await client.slowlog_get(100000)
        if entry["client_address"] in (info["addr"], info["addr"].encode())
    ]
    assert len(sent) == 1 and sent[0].split()[0].upper() == "EVALSHA"


# outages ---------------------------------------------------------------------------------


async def test_an_unreachable_server_is_unavailable_and_its_password_is_not_shown(
    backends: Callable[..., RedisBackend],
) -> None:
    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    backend = backends(url)
    assert backend.location == url.replace(":hunter2", "")
    with pytest.raises(CoordinationUnavailableError) as raised:
        await backend.open()
    assert backend.location in str(raised.value) and "hunter2" not in str(raised.value)


async def test_an_outage_is_unavailable_and_the_backend_recovers_after(
    server: Callable[..., Server],
    backends: Callable[..., RedisBackend],
    admin: Callable[..., Redis],
) -> None:
    redis = server("--requirepass", "hunter2")
    url = redis.url(":hunter2@")
    backend = backends(url)
    await backend.open()
    woken: list[int] = []
    await backend.listen(lambda: woken.append(1))
    lease = await backend.acquire(member("a"))
    assert lease is not None
    redis.stop()
    for call in (
        lambda: backend.renew(lease),
        lambda: backend.acquire(member("a")),
        lambda: backend.leader(),
        lambda: backend.claim(lease, [fire("j")]),
        lambda: backend.finish([fire("j")]),
        lambda: backend.unfinished(lease, ["j"]),
    ):
        with pytest.raises(CoordinationUnavailableError) as raised:
            await call()
        assert "hunter2" not in str(raised.value)
    await backend.release(lease)  # never raises: the lease expires on its own
    await backend.notify()  # best effort
    redis.start()  # empty: it kept nothing
    again = await backend.acquire(member("a"))
    assert again is not None
    assert set(await backend.claim(again, [fire("j")])) == {fire("j")}
    # The listener subscribed again by itself.
    await wait_until(lambda: woken, timeout=10)
    woken.clear()
    await admin(url).publish(f"quart_sched:{backend.key}:wake", "x")
    await wait_until(lambda: woken, timeout=5)


async def test_a_silent_server_times_a_call_out_within_the_ttl(
    server: Callable[..., Server], backends: Callable[..., RedisBackend]
) -> None:
    """A stopped server keeps its sockets open: only the backend's timeout ends the call."""
    redis = server()
    ttl = 1.0
    backend = backends(redis.url(), ttl=ttl)
    await backend.open()
    lease = await backend.acquire(member("a"))
    assert lease is not None and redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(CoordinationUnavailableError, match="Timeout"):
            await backend.renew(lease)
        assert time.monotonic() - started < ttl * 3
    finally:
        redis.process.send_signal(signal.SIGCONT)
    assert await backend.renew(lease)


async def test_a_server_that_refuses_writes_is_unavailable_until_it_accepts_them(
    server: Callable[..., Server],
    backends: Callable[..., RedisBackend],
    admin: Callable[..., Redis],
) -> None:
    redis = server()
    backend = backends(redis.url())
    await backend.open()
    lease = await backend.acquire(member("a"))
    assert lease is not None
    client = admin(redis.url())
    await client.config_set("maxmemory", "1")  # full: every write is refused (OOM)
    with pytest.raises(CoordinationUnavailableError, match="refused"):
        await backend.claim(lease, [fire("j")])
    await client.config_set("maxmemory", "0")
    assert set(await backend.claim(lease, [fire("j")])) == {fire("j")}


def test_the_package_imports_redis_only_when_a_backend_is_made() -> None:
    code = (
        "import sys, quart_sched, quart_sched._coordination.redis\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
