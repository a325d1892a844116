"""What the PostgreSQL backend does beyond the contract: sessions that die (terminated by
the server or ended by ``idle_session_timeout``), the advisory lock as death signal, the
URLs it accepts, and tables created by several processes at once.

Runs on the PostgreSQL of this machine (skipped with a message naming it when it is not
running). Sessions are found the way a DBA would: by ``application_name`` in
``pg_stat_activity`` and by the advisory locks they hold in ``pg_locks``.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from quart_sched._coordination.backend import CoordinationUnavailableError, Member

from coordination_support import POSTGRESQL_URL, require_server
from support import free_port

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

psycopg = pytest.importorskip("psycopg")

# The sessions named `name` that hold an advisory lock (the lease's death signal).
LOCK_HOLDERS = """
SELECT a.pid FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid
WHERE a.application_name = %s AND l.locktype = 'advisory' AND l.granted
"""


def member(name: str) -> Member:
    return Member(host=f"host-{name}", pid=2000 + ord(name[0]), token=uuid.uuid4().hex)


def with_scheme(url: str, scheme: str) -> str:
    return scheme + "://" + url.partition("://")[2]


def with_param(url: str, param: str) -> str:
    return url + ("&" if "?" in url else "?") + param


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Call ``check`` every 50 ms until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check}")
        await asyncio.sleep(0.05)
    return result


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    """A plain connection of the test's own, as a DBA's psql would be."""
    require_server("postgresql")
    conn = await psycopg.AsyncConnection.connect(POSTGRESQL_URL, autocommit=True)
    yield conn
    await conn.close()


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:16]


@pytest.fixture
async def backends(key: str) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Opened backends on ``key`` (any URL and TTL), closed at the end."""
    require_server("postgresql")
    from quart_sched._coordination.postgres import PostgresBackend

    made: list[PostgresBackend] = []

    async def factory(ttl: float = 30.0, url: str = POSTGRESQL_URL) -> PostgresBackend:
        backend = PostgresBackend(key, url=url, ttl=ttl)
        made.append(backend)
        await backend.open()
        return backend

    yield factory
    for backend in made:
        await backend.close()


async def lock_holders(admin: Any, key: str) -> list[int]:
    cursor = await admin.execute(LOCK_HOLDERS, [f"quart_sched lease {key}"])
    return [pid for (pid,) in await cursor.fetchall()]


async def terminate(admin: Any, pid: int) -> None:
    """End a session from the server side, and wait until it is gone."""
    cursor = await admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    assert await cursor.fetchone() == (True,)


async def test_a_terminated_leader_session_fails_once_then_the_next_call_reconnects(
    backends: Callable[..., Awaitable[Any]], admin: Any, key: str
) -> None:
    leader = await backends()
    lease = await leader.acquire(member("a"))
    assert lease is not None
    [old] = await lock_holders(admin, key)  # the leader holds the lock on its session
    await terminate(admin, old)

    with pytest.raises(CoordinationUnavailableError, match=r"PostgreSQL at .* renewing"):
        await leader.renew(lease)
    # Nobody took over meanwhile: the next call reconnects, renews, and locks again.
    assert await leader.renew(lease)
    [new] = await lock_holders(admin, key)
    assert new != old
    assert await leader.leader() == lease


async def test_a_live_holder_that_stops_renewing_keeps_the_lease_until_it_expires(
    backends: Callable[..., Awaitable[Any]],
) -> None:
    ttl = 2.0
    holder, standby = await backends(ttl=ttl), await backends(ttl=ttl)
    first = await holder.acquire(member("a"))
    assert first is not None
    assert await standby.acquire(member("b")) is None
    second = await eventually(lambda: standby.acquire(member("b")))
    # Both times are the server's: the standby took it only once the lease had expired.
    assert second.since >= first.since + timedelta(seconds=ttl)
    assert second.epoch == first.epoch + 1


async def test_of_standbys_racing_for_a_free_lease_exactly_one_takes_it(
    backends: Callable[..., Awaitable[Any]],
) -> None:
    """The one that gets the advisory lock and the ones that see the lease free race:
    none may override another's fresh lease."""
    standbys = [await backends() for _ in range(6)]
    holder = standbys[0]
    lease = await holder.acquire(member("a"))
    for _ in range(10):
        assert lease is not None
        await holder.release(lease)
        taken = await asyncio.gather(*(standby.acquire(member("b")) for standby in standbys))
        [(holder, winner)] = [(s, new) for s, new in zip(standbys, taken, strict=True) if new]
        assert winner.epoch == lease.epoch + 1
        assert await holder.leader() == winner
        lease = winner


async def test_a_leader_that_took_the_lease_without_the_lock_is_not_overridden(
    backends: Callable[..., Awaitable[Any]], admin: Any, key: str
) -> None:
    """A lease taken while some other session held the lock (a stopped leader's, not yet
    ended) proves nothing about its holder once the lock frees: it takes the lock itself."""
    first_holder, second_holder, standby = await backends(), await backends(), await backends()
    first = await first_holder.acquire(member("a"))
    assert first is not None
    lock_id = await advisory_lock_id(admin, key)
    await first_holder.release(first)
    stale = await psycopg.AsyncConnection.connect(POSTGRESQL_URL, autocommit=True)
    try:
        await stale.execute("SELECT pg_advisory_lock(%s)", [lock_id])
        second = await second_holder.acquire(member("b"))  # free, so taken without the lock
        assert second is not None
    finally:
        await stale.close()  # the stale session ends: the lock is free
    assert await standby.acquire(member("c")) is None
    assert await second_holder.renew(second)  # and takes the lock on its next renewal
    assert await standby.acquire(member("c")) is None
    [pid] = await lock_holders(admin, key)
    await terminate(admin, pid)
    third = await eventually(lambda: standby.acquire(member("c")), timeout=3.0)
    assert third.epoch == second.epoch + 1


async def advisory_lock_id(admin: Any, key: str) -> int:
    """The bigint of the lease's advisory lock, as pg_locks shows it (two 32-bit halves)."""
    cursor = await admin.execute(
        "SELECT l.classid, l.objid FROM pg_stat_activity AS a JOIN pg_locks AS l"
        " ON l.pid = a.pid WHERE a.application_name = %s AND l.locktype = 'advisory'",
        [f"quart_sched lease {key}"],
    )
    [(high, low)] = await cursor.fetchall()
    unsigned = (int(high) << 32) | int(low)
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


async def test_the_lease_goes_over_at_once_when_the_holders_session_is_terminated(
    backends: Callable[..., Awaitable[Any]], admin: Any, key: str
) -> None:
    holder, standby = await backends(ttl=30.0), await backends(ttl=30.0)
    first = await holder.acquire(member("a"))
    assert first is not None
    assert await standby.acquire(member("b")) is None
    [pid] = await lock_holders(admin, key)
    await terminate(admin, pid)

    second = await eventually(lambda: standby.acquire(member("b")), timeout=3.0)
    assert second.epoch == first.epoch + 1  # long before the 30 s TTL
    assert await lock_holders(admin, key)  # the new leader holds the lock in turn
    with pytest.raises(CoordinationUnavailableError):
        await holder.renew(first)  # its session is gone
    assert not await holder.renew(first)  # reconnected: another epoch leads


async def test_a_stopped_leaders_session_ends_on_its_own(
    backends: Callable[..., Awaitable[Any]], admin: Any, key: str
) -> None:
    """A SIGSTOPped leader keeps its socket, and its lock, for hours; seen from the server
    it is an idle session, which idle_session_timeout (the TTL) ends."""
    if admin.info.server_version < 140000:
        pytest.skip("idle_session_timeout needs PostgreSQL >= 14")
    leader = await backends(ttl=1.0)
    lease = await leader.acquire(member("a"))
    assert lease is not None
    assert await lock_holders(admin, key)
    # The leader now does nothing at all, as a stopped process would.
    await eventually(lambda: _no_lock_holder(admin, key), timeout=10.0)
    assert await leader.renew(lease)  # it wakes up: nobody took over, so it still leads


async def _no_lock_holder(admin: Any, key: str) -> bool:
    return not await lock_holders(admin, key)


@pytest.mark.parametrize(
    "scheme", ["postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg"]
)
async def test_sqlalchemy_and_libpq_urls_are_accepted(
    backends: Callable[..., Awaitable[Any]], scheme: str
) -> None:
    url = with_scheme(POSTGRESQL_URL, scheme)
    backend = await backends(url=url)
    assert backend.location == url
    lease = await backend.acquire(member("a"))
    assert lease is not None and await backend.leader() == lease


async def test_the_location_and_errors_never_show_the_password(key: str) -> None:
    from quart_sched._coordination.postgres import PostgresBackend

    url = f"postgresql+psycopg://quart:s3cr%40t@127.0.0.1:{free_port()}/test?sslmode=disable"
    backend = PostgresBackend(key, url=url, ttl=5.0)
    assert backend.location == f"postgresql+psycopg://quart@{url.partition('@')[2]}"
    with pytest.raises(CoordinationUnavailableError) as raised:
        await backend.open()
    message = str(raised.value)
    assert backend.location in message and "connecting" in message
    assert "s3cr" not in message
    await backend.close()


async def test_a_server_that_never_answers_is_unavailable_after_the_ttl(key: str) -> None:
    """A stalled server (a partition, a frozen host) must not hang the lease's owner."""
    from quart_sched._coordination.postgres import PostgresBackend

    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        backend = PostgresBackend(key, url=f"postgresql://127.0.0.1:{port}/test", ttl=1.0)
        started = time.monotonic()
        with pytest.raises(CoordinationUnavailableError, match="no answer within 1 s"):
            await backend.open()
        assert time.monotonic() - started < 10  # bounded by the TTL, not by TCP's hours
        await backend.close()


def test_a_url_of_another_database_is_refused() -> None:
    from quart_sched._coordination.postgres import PostgresBackend

    with pytest.raises(ValueError, match="'mysql' is not a PostgreSQL URL"):
        PostgresBackend("k", url="mysql://user:pw@host/db")


async def test_several_processes_create_the_tables_at_once(admin: Any, key: str) -> None:
    """Concurrent CREATE TABLE IF NOT EXISTS can collide in the catalogue; all must open."""
    from quart_sched._coordination.postgres import PostgresBackend

    schema = f"quart_sched_test_{key}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    url = with_param(POSTGRESQL_URL, f"options=-csearch_path%3D{schema}")
    made = [PostgresBackend(key, url=url, ttl=10.0) for _ in range(8)]
    try:
        await asyncio.gather(*(backend.open() for backend in made))
        cursor = await admin.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            [f"{schema}.quart_sched_lease", f"{schema}.quart_sched_fires"],
        )
        assert await cursor.fetchone() == (True,)
        lease = await made[0].acquire(member("a"))
        assert lease is not None and await made[1].leader() == lease
    finally:
        for backend in made:
            await backend.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_a_role_that_may_not_create_the_tables_is_told_what_to_do(
    admin: Any, key: str
) -> None:
    """PostgreSQL 15 took CREATE on the public schema from ordinary roles."""
    from quart_sched._coordination.postgres import PostgresBackend

    schema, role = f"quart_sched_test_{key}", f"quart_sched_test_{key}"
    await admin.execute(f'CREATE ROLE "{role}" LOGIN')
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    search_path = f"options=-csearch_path%3D{schema}"
    backend = PostgresBackend(key, url=with_param(POSTGRESQL_URL, f"user={role}&{search_path}"))
    owner = PostgresBackend(key, url=with_param(POSTGRESQL_URL, search_path))
    try:
        with pytest.raises(CoordinationUnavailableError, match="grant CREATE on the schema"):
            await backend.open()
        await owner.open()  # an owner creates them once...
        await admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'
        )
        await backend.open()  # ...and the role uses them, without CREATE and without a restart
        assert await backend.acquire(member("a")) is not None
    finally:
        for each in (backend, owner):
            await each.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.execute(f'DROP ROLE "{role}"')


async def test_a_listener_whose_session_ends_listens_again_and_wakes_once(
    backends: Callable[..., Awaitable[Any]], admin: Any, key: str
) -> None:
    leader, standby = await backends(), await backends()
    woken: list[int] = []
    await leader.listen(lambda: woken.append(1))
    cursor = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        [f"quart_sched listen {key}"],
    )
    [(pid,)] = await cursor.fetchall()
    await terminate(admin, pid)
    # Notifications sent while it was away are lost: it wakes once when it is back.
    await eventually(lambda: _truthy(woken), timeout=10.0)
    woken.clear()
    await standby.notify()
    await eventually(lambda: _truthy(woken), timeout=5.0)


async def _truthy(value: object) -> bool:
    return bool(value)


def test_the_package_imports_without_psycopg() -> None:
    """psycopg is an extra: without it the module imports, and using it says what to do."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import quart_sched\n"
        "from quart_sched._coordination.postgres import PostgresBackend\n"
        "try:\n"
        "    PostgresBackend('k', url='postgresql://h/db')\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'quart-sched[postgresql]'" in done.stdout
