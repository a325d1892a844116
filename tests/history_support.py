"""PostgreSQL for the run history tests: a schema of the test's own, and a proxy to cut.

Each test gets a fresh schema (dropped afterwards) and a URL whose ``search_path`` points
there, so the history's tables are the test's alone while other tests run at once. The
URL also names the connection (``application_name``) after the schema, so a test can find
the history's own connection on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

from coordination_support import POSTGRESQL_URL, require_server


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL of the test database whose tables go to a new, empty schema."""
    require_server("postgresql")
    schema = f"qs_hist_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRESQL_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(POSTGRESQL_URL, schema)
    finally:
        with psycopg.connect(POSTGRESQL_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def schema_url(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"


def schema_of(url: str) -> str:
    return url.rsplit("application_name=", 1)[1]


def pg_rows(url: str, where: str = "true", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """The rows of the runs table at ``url``, oldest first, read directly."""
    with (
        psycopg.connect(url, autocommit=True, application_name="quart_sched tests") as conn,
        conn.cursor(row_factory=dict_row) as cursor,
    ):
        try:
            cursor.execute(f"SELECT * FROM quart_sched_runs WHERE {where} ORDER BY id", params)
        except psycopg.errors.UndefinedTable:
            return []  # not created yet
        return list(cursor.fetchall())


def terminate_history_connections(url: str) -> int:
    """End the server side of every connection made with ``url`` (the history's); how many."""
    with psycopg.connect(POSTGRESQL_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (schema_of(url),),
        ).fetchall()
    return sum(1 for (done,) in rows if done)


class Proxy:
    """A TCP proxy to PostgreSQL, on this test's loop. :meth:`cut` drops every connection
    through it and turns new ones away (an outage); :meth:`restore` ends the outage."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.target = (host, port)
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, schema: str) -> str:
        return schema_url(f"postgresql://127.0.0.1:{self.port}/test", schema)

    def cut(self) -> None:
        self.down = True
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        ends = (writer, up_writer)
        self._writers.update(ends)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink, ends))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in ends:
                writer.close()
                self._writers.discard(writer)
