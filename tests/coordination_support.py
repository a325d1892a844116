"""Coordination backends on the real servers, for the tests (and a child process that holds
a lease until it is killed: ``python tests/coordination_support.py hold KIND KEY DIR``).

PostgreSQL and Redis are those of this machine (127.0.0.1, trust auth, database ``test``);
outside CI a test that needs one that is not running is skipped with a message naming it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from quart_sched._coordination.backend import Backend, Member

POSTGRESQL_URL = os.environ.get("QUART_SCHED_TEST_POSTGRESQL", "postgresql://127.0.0.1/test")
REDIS_URL = os.environ.get("QUART_SCHED_TEST_REDIS", "redis://127.0.0.1:6379/0")

#: Every backend the contract tests run against.
BACKENDS = ["file", "postgresql", "redis"]


def server_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(kind: str) -> None:
    """Skip (outside CI) or fail (in CI) when ``kind``'s server is not running."""
    port = {"postgresql": 5432, "redis": 6379}.get(kind)
    if port is None or server_answers("127.0.0.1", port):
        return
    message = f"{kind} is not running on 127.0.0.1:{port}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def make_backend(kind: str, key: str, directory: Path, *, ttl: float) -> Backend:
    """A backend of ``kind`` on ``key`` (not opened)."""
    require_server(kind)
    if kind == "file":
        from quart_sched._coordination.file import FileBackend

        return FileBackend(key, directory=str(directory), ttl=ttl)
    if kind == "postgresql":
        from quart_sched._coordination.postgres import PostgresBackend

        return PostgresBackend(key, url=POSTGRESQL_URL, ttl=ttl)
    if kind == "redis":
        from quart_sched._coordination.redis import RedisBackend

        return RedisBackend(key, url=REDIS_URL, ttl=ttl)
    raise ValueError(kind)


async def _hold(kind: str, key: str, directory: str) -> None:
    backend = await make_backend(kind, key, Path(directory), ttl=30.0)
    await backend.open()
    me = Member(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex)
    lease = await backend.acquire(me)
    print("leading" if lease is not None else "not leading", flush=True)
    while lease is not None:
        await asyncio.sleep(0.5)
        await backend.renew(lease)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    assert command == "hold"
    asyncio.run(_hold(*args))
