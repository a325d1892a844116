"""The contract every coordination backend keeps: lease, epoch, fence, ledger, wake-ups.

Each test runs against every backend on real parts: the SQLite file, PostgreSQL, Redis
(skipped with a message naming the server when it is not running outside CI). Two
backend objects on one key stand for two processes: file locks, advisory locks and Redis
connections are per object, as they are per process.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from quart_sched._coordination.backend import Backend, LeaseLostError, Member
from quart_sched._gate import Fire

from coordination_support import BACKENDS, make_backend
from support import wait_until

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., Awaitable[Backend]]


def member(name: str = "a") -> Member:
    return Member(host=f"host-{name}", pid=1000 + ord(name[0]), token=uuid.uuid4().hex)


@pytest.fixture(params=BACKENDS)
async def backends(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Backends on one fresh key (as many as a test asks for), closed at the end."""
    key = uuid.uuid4().hex[:16]
    made: list[Backend] = []

    async def factory(ttl: float = 2.0) -> Backend:
        backend = await make_backend(request.param, key, tmp_path, ttl=ttl)
        made.append(backend)
        await backend.open()
        return backend

    yield factory
    for backend in made:
        await backend.close()


def fire(job_id: str, seconds: int = 0) -> Fire:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc) + timedelta(seconds=seconds)
    return Fire(job_id, at, keep_until=datetime.now(timezone.utc) + timedelta(hours=1))


async def test_one_process_leads_and_the_other_waits(backends: Factory) -> None:
    one, two = await backends(), await backends()
    a, b = member("a"), member("b")
    lease = await one.acquire(a)
    assert lease is not None and lease.held_by(a)
    assert lease.host == "host-a" and lease.pid == a.pid
    assert await two.acquire(b) is None
    assert await one.acquire(a) == lease  # the holder asking again keeps its lease
    seen = await two.leader()
    assert seen is not None and seen.epoch == lease.epoch and seen.token == a.token
    assert await one.renew(lease)


async def test_a_graceful_release_hands_over_at_once_with_a_new_epoch(
    backends: Factory,
) -> None:
    one, two = await backends(), await backends()
    first = await one.acquire(member("a"))
    assert first is not None
    await one.release(first)
    second = await two.acquire(member("b"))
    assert second is not None and second.epoch > first.epoch
    assert not await one.renew(first)


async def test_an_expired_lease_goes_to_the_next_with_a_new_epoch_and_fences_the_old(
    backends: Factory,
) -> None:
    ttl = 1.0
    one, two = await backends(ttl=ttl), await backends(ttl=ttl)
    a, b = member("a"), member("b")
    first = await one.acquire(a)
    assert first is not None
    # `one` stops renewing, as a paused process would; it is still connected.
    deadline = asyncio.get_running_loop().time() + ttl * 5
    second = None
    while second is None and asyncio.get_running_loop().time() < deadline:
        second = await two.acquire(b)
        await asyncio.sleep(0.1)
    assert second is not None and second.epoch > first.epoch and second.held_by(b)
    # The old leader wakes up: it cannot renew, and the ledger refuses it.
    assert not await one.renew(first)
    with pytest.raises(LeaseLostError):
        await one.claim(first, [fire("j")])
    assert set(await two.claim(second, [fire("j")])) == {fire("j")}


async def test_the_ledger_grants_each_fire_once(backends: Factory) -> None:
    one = await backends()
    lease = await one.acquire(member("a"))
    assert lease is not None
    fires = [fire("a"), fire("a", 1), fire("b")]
    assert set(await one.claim(lease, fires)) == set(fires)
    again = [fire("a"), fire("a", 2), fire("b")]
    assert set(await one.claim(lease, again)) == {fire("a", 2)}
    assert set(await one.claim(lease, [])) == set()
    # Asked twice in one claim: granted once.
    assert list(await one.claim(lease, [fire("c"), fire("c"), fire("b")])) == [fire("c")]


async def test_a_new_leader_cannot_claim_what_the_old_one_claimed(backends: Factory) -> None:
    one, two = await backends(), await backends()
    first = await one.acquire(member("a"))
    assert first is not None
    assert set(await one.claim(first, [fire("j"), fire("k")])) == {fire("j"), fire("k")}
    await one.release(first)
    second = await two.acquire(member("b"))
    assert second is not None
    assert set(await two.claim(second, [fire("j"), fire("k", 1)])) == {fire("k", 1)}


async def test_a_burst_of_claims_is_granted_in_one_call(backends: Factory) -> None:
    one = await backends()
    lease = await one.acquire(member("a"))
    assert lease is not None
    fires = [fire(f"job-{i}") for i in range(2000)]
    assert len(await one.claim(lease, fires)) == 2000
    assert len(await one.claim(lease, fires)) == 0


async def test_fires_given_back_can_be_claimed_by_the_next_leader(backends: Factory) -> None:
    """A leader that stops gives back the fires it claimed ahead and never ran: only
    its own epoch's claims, and never a finished run."""
    one, two = await backends(), await backends()
    first = await one.acquire(member("a"))
    assert first is not None
    await one.claim(first, [fire("ahead"), fire("ran"), fire("kept")])
    await one.finish([fire("ran")])
    await one.unclaim(first, [fire("ahead"), fire("ran")])
    await one.unclaim(first, [])
    await one.release(first)
    second = await two.acquire(member("b"))
    assert second is not None
    assert set(await two.claim(second, [fire("ahead"), fire("ran"), fire("kept")])) == {
        fire("ahead")
    }
    # The old epoch's process cannot give back what the new epoch claimed.
    await one.unclaim(first, [fire("ahead")])
    assert set(await two.claim(second, [fire("ahead")])) == set()


async def test_unfinished_claims_of_a_gone_leader_are_reclaimed_once(backends: Factory) -> None:
    one, two, three = await backends(), await backends(), await backends()
    first = await one.acquire(member("a"))
    assert first is not None
    await one.claim(first, [fire("keep"), fire("done"), fire("other")])
    await one.finish([fire("done")])
    await one.release(first)
    second = await two.acquire(member("b"))
    assert second is not None
    assert await two.unfinished(second, ["keep", "done"]) == [fire("keep")]
    assert await two.unfinished(second, ["keep", "done"]) == []  # re-claimed: once
    await two.release(second)
    third = await three.acquire(member("c"))
    assert third is not None
    # Re-claimed by `two` and never finished: `two` is gone as well, so it is offered again.
    assert await three.unfinished(third, ["keep"]) == [fire("keep")]


async def test_notify_wakes_the_listeners(backends: Factory) -> None:
    leader, standby = await backends(), await backends()
    woken: list[int] = []
    await leader.listen(lambda: woken.append(1))
    await standby.notify()
    await wait_until(lambda: woken, timeout=5)


async def test_leader_is_none_when_nobody_leads(backends: Factory) -> None:
    one = await backends()
    assert await one.leader() is None
    lease = await one.acquire(member("a"))
    assert lease is not None
    await one.release(lease)
    assert await one.leader() is None


async def test_the_lease_goes_over_at_once_when_its_holder_is_killed(
    backends: Factory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """File locks, advisory locks and Redis connections end with their process: a standby
    takes over at once, not after the lease's TTL (30 s in the child)."""
    standby = await backends()
    kind = request.node.callspec.params["backends"]
    script = str(Path(__file__).with_name("coordination_support.py"))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        "hold",
        kind,
        standby.key,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        assert line.strip() == b"leading"
        assert await standby.acquire(member("b")) is None
        child.kill()
        await child.wait()
        killed = time.monotonic()
        lease = None
        while lease is None and time.monotonic() - killed < 10:
            lease = await standby.acquire(member("b"))
            await asyncio.sleep(0.05)
        assert lease is not None
        assert time.monotonic() - killed < 3, "took the TTL, not the death signal"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
