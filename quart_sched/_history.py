"""Run history: every run of every job, in an embedded SQLite file written through
aiosqlite (:class:`RunHistory`), or in PostgreSQL (``_history_pg.PostgresRunHistory``).

The executor reports runs through the cheap synchronous calls ``started``, ``finished``
and ``not_run``, which only append to in-memory buffers; a writer task flushes them in
batches, in one transaction each. A run that starts and finishes between two flushes
costs one INSERT. :class:`BufferedRecorder` is all that both backends share (recording,
the writer, the lifecycle, the queries and their SQL); a backend adds how to reach its
store. This module and ``_history_pg`` are the only ones that write SQL for history;
:func:`make_recorder` picks the backend for ``SCHEDULER_HISTORY``.

Times are stored as UTC epoch seconds and shown as ISO 8601 with a ``+00:00`` offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypedDict, TypeVar

import aiosqlite

from ._urls import is_postgresql_url
from .errors import ConfigurationError, HistoryUnavailableError

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

logger = logging.getLogger("quart_sched")
_time = time.time

#: Outcomes of a finished run; ``running`` marks one under way.
OUTCOMES = ("success", "error", "missed", "skipped", "interrupted")
RUNNING = "running"
SCHEMA_VERSION = 2
#: version -> statements taking the schema from version - 1 to version
MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            scheduled_run_time REAL,
            started_at REAL,
            finished_at REAL,
            at REAL NOT NULL,
            duration REAL,
            error_type TEXT,
            error_message TEXT,
            traceback TEXT,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            process TEXT NOT NULL
        )""",
        "CREATE INDEX runs_job ON runs (job_id, id)",
        "CREATE INDEX runs_at ON runs (at)",
        "CREATE INDEX runs_running ON runs (outcome) WHERE outcome = 'running'",
    ),
    # The leader's epoch the run ran under (None: no coordination, or not the leader).
    2: ("ALTER TABLE runs ADD COLUMN epoch INTEGER",),
}
#: The columns of a row, in the order of the tuples that the recording calls build (a
#: query adds ``id`` before them). Both backends store them alike.
COLUMNS = (
    "run_id, job_id, outcome, scheduled_run_time, started_at, finished_at, at, duration, "
    "error_type, error_message, traceback, host, pid, process, epoch"
)
Row = tuple[Any, ...]
C = TypeVar("C")  # a backend's connection


class Statements:
    """The SQL both backends share, for one table and one parameter mark (``?``, ``%s``).
    Templates name the table ``{table}`` and mark parameters with ``?``."""

    def __init__(self, table: str, mark: str) -> None:
        self.table = table
        self.mark = mark
        self.select = self.sql(f"SELECT id, {COLUMNS} FROM {{table}}")
        #: New rows: a plain INSERT, so that a row already there (another run's) is never
        #: replaced.
        self.insert = self.sql(
            f"INSERT INTO {{table}} ({COLUMNS}) VALUES ({','.join('?' * len(COLUMNS.split(',')))})"
        )
        #: Parameters: :func:`finish_params`.
        self.finish = self.sql(
            "UPDATE {table} SET outcome=?, finished_at=?, duration=? - started_at, "
            "error_type=?, error_message=?, traceback=? WHERE run_id=?"
        )
        self.running = f"{self.select} WHERE outcome = {mark} ORDER BY id DESC"
        #: (pid, process) of the processes with runs under way on one host.
        self.writers = self.sql(
            "SELECT DISTINCT pid, process FROM {table} WHERE outcome = ? AND host = ?"
        )
        #: Marks runs under way as ended with their process; a backend adds ``AND`` which.
        self.interrupt = self.sql(
            "UPDATE {table} SET outcome = 'interrupted', error_type = 'ProcessDied', "
            "error_message = 'the process running it ended during the run' WHERE outcome = ?"
        )

    def sql(self, template: str) -> str:
        return template.replace("{table}", self.table).replace("?", self.mark)

    def marks(self, count: int) -> str:
        return ",".join([self.mark] * count)

    def page(
        self,
        job_id: str | None,
        outcome: str | Sequence[str] | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
    ) -> tuple[str, list[Any]]:
        """A page of runs, newest first, and its parameters; the LIMIT is left to add."""
        mark = self.mark
        where: list[str] = []
        params: list[Any] = []
        if job_id is not None:
            where.append(f"job_id = {mark}")
            params.append(job_id)
        if outcome is not None:
            outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
            where.append(f"outcome IN ({self.marks(len(outcomes))})")
            params += outcomes
        if since is not None:
            where.append(f"at >= {mark}")
            params.append(since.timestamp())
        if until is not None:
            where.append(f"at < {mark}")
            params.append(until.timestamp())
        if cursor is not None:
            where.append(f"id < {mark}")
            params.append(decode_cursor(cursor))
        sql = self.select + (f" WHERE {' AND '.join(where)}" if where else "")
        return f"{sql} ORDER BY id DESC LIMIT {mark}", params

    def last_runs(self, count: int) -> str:
        """The latest row of each of ``count`` job ids."""
        return (
            f"{self.select} WHERE id IN (SELECT MAX(id) FROM {self.table} "
            f"WHERE job_id IN ({self.marks(count)}) GROUP BY job_id)"
        )

    def retention(
        self, keep_runs: int | None, keep_days: float | None
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The DELETEs that keep ``keep_runs`` per job and ``keep_days``; runs under way
        are kept, and count for neither."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        if keep_days is not None:
            statements.append(
                (
                    self.sql("DELETE FROM {table} WHERE at < ? AND outcome != ?"),
                    (time.time() - keep_days * 86400, RUNNING),
                )
            )
        if keep_runs is not None:
            statements.append(
                (
                    self.sql(
                        "DELETE FROM {table} WHERE id IN (SELECT id FROM (SELECT id, "
                        "ROW_NUMBER() OVER (PARTITION BY job_id ORDER BY id DESC) AS n "
                        "FROM {table} WHERE outcome != ?) AS ranked WHERE n > ?)"
                    ),
                    (RUNNING, keep_runs),
                )
            )
        return statements


_SQLITE = Statements("runs", "?")
_INSERT_OR_IGNORE = _SQLITE.insert.replace("INSERT", "INSERT OR IGNORE", 1)
#: Rows written again into a recreated file. One already there (a restored copy) is the
#: same run only if the same process wrote it: only then is it brought up to date.
_REWRITE = (
    f"{_SQLITE.insert} ON CONFLICT(run_id) DO UPDATE SET "
    "outcome=excluded.outcome, finished_at=excluded.finished_at, duration=excluded.duration, "
    "error_type=excluded.error_type, error_message=excluded.error_message, "
    "traceback=excluded.traceback WHERE runs.process = excluded.process"
)


class _Process:
    """This process as the history knows it: its pid, and a token that tells its rows from
    those of an earlier process that had the same pid; run ids are the token's first 64
    bits and a counter."""

    __slots__ = ("numbers", "pid", "prefix", "token")

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.prefix = self.token[:16]
        self.pid = os.getpid()
        self.numbers = itertools.count(1)


_process = _Process()


def _renew_process() -> None:
    # A child forked after import (a pre-forking server, multiprocessing's fork) would
    # otherwise hand out the parent's run ids, and write rows under its pid and token.
    global _process
    _process = _Process()


os.register_at_fork(after_in_child=_renew_process)


def this_process() -> _Process:
    """This process as the history knows it (renewed in a forked child)."""
    return _process


def run_record(row: Sequence[Any]) -> dict[str, Any]:
    """A recorded run as the API shows it, from what started/finished/not_run return."""
    return _row_to_dict([None, *row])


def encode_cursor(row_id: int) -> str:
    """The cursor of the page after the row ``row_id`` (the API accepts digits only)."""
    return str(row_id)


def decode_cursor(cursor: str) -> int:
    return int(cursor)


def finish_params(rows: Iterable[Row]) -> list[Row]:
    """The parameters of :attr:`Statements.finish` for finished ``rows``."""
    return [(r[2], r[5], r[5], r[8], r[9], r[10], r[0]) for r in rows]


def dead_processes(writers: Iterable[Sequence[Any]]) -> list[str]:
    """Of the (pid, process) pairs of this host's runs under way, the processes that ended:
    not this process, and either this pid under another token or a pid no longer alive."""
    me = _process
    return [
        process
        for pid, process in writers
        if process != me.token and (pid == me.pid or not _pid_alive(pid))
    ]


def log_interrupted(count: int) -> None:
    if count > 0:
        logger.warning(
            "Run history: %d run(s) left running by a process that ended were marked interrupted",
            count,
        )


def log_clash(location: str, count: int) -> None:
    logger.error(
        "Run history %r already holds the run ids of %d run(s) recorded now: the rows there "
        "were kept, and those records not written",
        location,
        count,
    )


#: Seconds a query waits for the history file to be opened when the app has just started.
OPEN_WAIT = 5.0
#: Seconds a closing history keeps trying to write what it holds, and between tries: a
#: file another process holds (workers sharing one history) is locked only briefly.
CLOSING_PATIENCE = 5.0
CLOSING_RETRY = 0.1
#: Records kept in memory while the file cannot be written; older ones are dropped.
MAX_BUFFERED = 100_000
#: The writer puts off a write while runs are recorded faster than this (per second),
#: checking every BURST_PROBE s, for at most BURST_WAIT flush intervals.
BURST_RATE = 1000
BURST_PROBE = 0.02
BURST_WAIT = 8


@dataclass(frozen=True)
class RunPage:
    """One page of runs, newest first; pass ``next_cursor`` back for the next page."""

    runs: list[dict[str, Any]]
    next_cursor: str | None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def _row_to_dict(row: Sequence[Any]) -> dict[str, Any]:
    (
        _id,
        run_id,
        job_id,
        outcome,
        scheduled,
        started,
        finished,
        _at,
        duration,
        error_type,
        error_message,
        tb,
        host,
        pid,
        _process,
        epoch,
    ) = row
    error = f"{error_type}: {error_message}" if error_type else None
    return {
        "run_id": run_id,
        "job_id": job_id,
        "outcome": outcome,
        "scheduled_run_time": _iso(scheduled),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration": duration,
        "error": error,
        "error_type": error_type,
        "error_message": error_message,
        "traceback": tb,
        "host": host,
        "pid": pid,
        "epoch": epoch,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunRecorder(ABC):
    """What the scheduler, the API, the dashboard and the CLI need of a run history.

    :class:`RunHistory` (SQLite, one file per host) is one; a history shared by several
    hosts (PostgreSQL) is another behind the same methods. Recording is synchronous and
    cheap, on the loop: it only buffers, and a writer of the recorder's own stores the
    rows. Reading is async. ``hold``/``release`` keep it open for each part that needs it.
    """

    #: The leader's epoch while this process leads (set by the coordination), else None.
    #: Every run started, and every fire recorded as not run, carries the value it had.
    epoch: int | None = None

    @property
    @abstractmethod
    def location(self) -> str:
        """Where runs are kept: a file path, ``":memory:"``, a database URL (no password)."""

    @abstractmethod
    def started(self, job_id: str, scheduled: datetime | None) -> str:
        """Record that a run starts now; its run id."""

    @abstractmethod
    def finished(
        self,
        run_id: str,
        outcome: str,
        *,
        error: BaseException | None = None,
        traceback: str | None = None,
    ) -> tuple[Any, ...]:
        """Record how the run ``run_id`` ended; the row recorded."""

    @abstractmethod
    def not_run(self, job_id: str, scheduled: datetime | None, outcome: str) -> tuple[Any, ...]:
        """Record a fire that never started (missed, skipped); the row recorded."""

    @abstractmethod
    def hold(self, holder: str) -> None:
        """Keep the recorder open for ``holder``."""

    @abstractmethod
    async def release(self, holder: str) -> None:
        """``holder`` is done; the last one out writes everything and closes."""

    @abstractmethod
    def close_now(self) -> None:
        """Close without the loop (it is stopping or gone)."""

    @abstractmethod
    async def runs(
        self,
        job_id: str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        outcome: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RunPage:
        """Runs newest first, of one job or all, filtered by outcome and start time."""

    @abstractmethod
    async def running(self) -> list[dict[str, Any]]:
        """The runs under way."""

    @abstractmethod
    async def last_runs(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The latest run of each of ``job_ids`` that has one."""


class RecorderOptions(TypedDict, total=False):
    """What a :class:`BufferedRecorder` takes besides its store and host: retention, and
    the seconds between writes, between retries, and between retention passes."""

    keep_runs: int | None
    keep_days: float | None
    flush_interval: float
    retry_interval: float
    retention_interval: float


class BufferedRecorder(RunRecorder, Generic[C]):
    """What both histories share: recording into buffers, the writer task that flushes
    them in batches (retrying while the store cannot be written, keeping up to
    :data:`MAX_BUFFERED` records meanwhile), the hold/release lifecycle, and the queries.

    A backend says how to reach its store (``_connect``, ``_disconnect``), how to write one
    batch in one transaction (``_store``), read (``_query``) and delete (``_delete``), in
    the SQL of :attr:`sql`. ``keep_runs`` keeps that many runs per job, ``keep_days``
    drops runs older than that (None: no limit); both are enforced by the writer.
    """

    #: The store's SQL: its table and parameter mark.
    sql: ClassVar[Statements]
    #: What the store's client raises when the store cannot be used.
    store_error: ClassVar[type[Exception]]

    def __init__(
        self,
        *,
        host: str,
        keep_runs: int | None = None,
        keep_days: float | None = None,
        flush_interval: float = 0.25,
        retry_interval: float = 5.0,
        retention_interval: float = 60.0,
    ) -> None:
        self.keep_runs = keep_runs
        self.keep_days = keep_days
        self.host = host
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.retention_interval = retention_interval
        self.epoch = None  # an instance attribute: read on every run
        self.error: str | None = None  # why the store cannot be used, while it cannot
        self._db: C | None = None
        self._starts: dict[str, Row] = {}  # run_id -> row, not yet written
        self._live: dict[str, Row] = {}  # run_id -> row of a run under way
        self._finishes: list[Row] = []  # rows of runs whose start is written
        self._lock = asyncio.Lock()  # one flush or query at a time on the connection
        self._dropped = 0
        self._wake: asyncio.Event | None = None
        self._poked = False  # _wake set since the writer last cleared it
        self._stopping: asyncio.Event | None = None
        self._opened = asyncio.Event()  # set once the writer has tried to open the store
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._last_retention = 0.0
        self._recorded = 0  # records taken since start: tells a burst under way
        self._holders: set[str] = set()
        self._close_deadline: float | None = None  # set by the first failed write at close

    @property
    def pid(self) -> int:
        """The id of the process recording runs (a fork records under its own)."""
        return _process.pid

    # recording: cheap, synchronous, on the loop ------------------------------------------

    # Each call builds one tuple of plain values (which the garbage collector stops
    # tracking: thousands of buffered rows in a burst then cost it nothing) and touches
    # the buffers once; everything else (SQL parameters, dicts for the API) is built
    # later, off the path of a run. Columns in COLUMNS order; `at` (the sort time) is
    # the start, or the decision.

    def _row(self, job_id: str, scheduled: datetime | None, outcome: str, *, started: bool) -> Row:
        now = _time()
        process = _process
        return (
            # Unique across processes (64 random bits each) and cheaper than uuid4().
            f"{process.prefix}-{next(process.numbers)}",
            job_id,
            outcome,
            None if scheduled is None else scheduled.timestamp(),
            now if started else None,  # started_at
            None if started else now,  # finished_at
            now,  # at
            None,  # duration
            None,  # error_type
            None,  # error_message
            None,  # traceback
            self.host,
            process.pid,
            process.token,
            self.epoch,
        )

    def started(self, job_id: str, scheduled: datetime | None) -> str:
        """Record that a run starts now, before the job's code runs; returns its run id."""
        now = _time()
        process = _process
        run_id = f"{process.prefix}-{next(process.numbers)}"
        self._starts[run_id] = self._live[run_id] = (
            run_id,
            job_id,
            RUNNING,
            None if scheduled is None else scheduled.timestamp(),
            now,  # started_at
            None,  # finished_at
            now,  # at
            None,  # duration
            None,  # error_type
            None,  # error_message
            None,  # traceback
            self.host,
            process.pid,
            process.token,
            self.epoch,
        )
        self._poke()
        return run_id

    def finished(
        self,
        run_id: str,
        outcome: str,
        *,
        error: BaseException | None = None,
        traceback: str | None = None,
    ) -> Row:
        """Record how a run ended; returns its row (see :func:`run_record`)."""
        now = _time()
        start = self._live.pop(run_id)
        started_at = start[4]
        row = (
            run_id,
            start[1],
            outcome,
            start[3],
            started_at,
            now,
            start[6],
            now - started_at,
            None if error is None else type(error).__name__,
            None if error is None else str(error),
            traceback,
            start[11],
            start[12],
            start[13],
            start[14],
        )
        starts = self._starts
        if run_id in starts:
            # Not written yet: its one INSERT carries start and end. The buffers do not
            # grow, and the start already woke the writer (which writes this row next).
            starts[run_id] = row
            self._recorded += 1
        else:
            self._finishes.append(row)
            self._poke()
        return row

    def not_run(self, job_id: str, scheduled: datetime | None, outcome: str) -> Row:
        """Record a run that never started: ``missed`` or ``skipped``; returns its row."""
        row = self._row(job_id, scheduled, outcome, started=False)
        run_id = row[0]
        self._starts[run_id] = row
        self._poke()
        return row

    def _poke(self) -> None:
        self._recorded += 1
        if len(self._starts) + len(self._finishes) > MAX_BUFFERED:
            self._drop_oldest()
        if not self._poked:
            self._wake_writer()

    def _wake_writer(self) -> None:
        """Set the writer's wake-up, once until the writer clears it (``_poked`` saves a
        run the ``Event.is_set`` call)."""
        wake = self._wake
        if wake is not None:
            self._poked = True
            wake.set()

    def _drop_oldest(self) -> None:
        excess = len(self._starts) + len(self._finishes) - MAX_BUFFERED
        for run_id in list(self._starts)[:excess]:
            del self._starts[run_id]
            self._dropped += 1
        if self._dropped and self._dropped % 10_000 == 1:
            logger.warning(
                "Run history %r cannot keep up or cannot be written: %d records dropped",
                self.location,
                self._dropped,
            )

    # the backend ------------------------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> C:
        """Open the store: its schema made or migrated, runs of dead processes marked."""

    @abstractmethod
    async def _disconnect(self, db: C) -> None:
        """Close ``db``."""

    @abstractmethod
    def _disconnect_now(self, db: C) -> None:
        """Close ``db`` without the loop (it is stopping or gone)."""

    @abstractmethod
    async def _store(self, db: C, starts: list[Row], finishes: list[Row]) -> None:
        """Write new rows and the ends of runs already written, in one transaction (all
        or nothing: on an error nothing is written, and the error is raised)."""

    @abstractmethod
    async def _query(self, db: C, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows ``sql`` selects."""

    @abstractmethod
    async def _delete(self, db: C, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Run the DELETE ``statements`` in one transaction; how many rows went."""

    def _usable(self, db: C) -> bool:
        """Whether ``db`` still works (a connection the server dropped does not)."""
        return True

    async def _check_store(self) -> None:
        """Before a write, under the lock: make sure the store is the one opened."""

    def _idle_timeout(self) -> float | None:
        """Seconds the writer waits for records when it has nothing to write."""
        return self.retention_interval if (self.keep_runs or self.keep_days) else None

    async def _maintain(self) -> None:
        """After each write: the store's upkeep (retention, at its interval)."""
        await self._retention()

    def _unwritten(self) -> int:
        return len(self._starts) + len(self._finishes)

    def _forget_unwritten(self) -> None:
        self._starts.clear()
        self._finishes.clear()

    def _buffered(self) -> bool:
        return bool(self._starts or self._finishes)

    # lifecycle --------------------------------------------------------------------------
    #
    # Several parts need the history open, each for its own span: the serving app, a
    # running scheduler (until its runs are drained), the CLI. Each holds it: the first
    # hold opens it, the last release writes what is left and closes it.

    def hold(self, holder: str) -> None:
        """Keep the history open for ``holder`` (opened now if it was not)."""
        self._holders.add(holder)
        self.start()

    async def release(self, holder: str) -> None:
        """``holder`` is done; the last one out writes everything and closes the store."""
        self._holders.discard(holder)
        if not self._holders:
            await self.aclose()

    def held_by(self, holder: str) -> bool:
        """Whether ``holder`` holds the history open now."""
        return holder in self._holders

    def start(self) -> None:
        """Start the writer on the running loop (it opens the store)."""
        if self._writer is not None and not self._writer.done():
            return
        self._closing = False
        self._close_deadline = None
        self._wake = asyncio.Event()
        self._poked = False
        self._stopping = asyncio.Event()
        self._opened = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def aclose(self) -> None:
        """Write everything recorded, then close the store."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._stopping is not None:
            self._stopping.set()
        try:
            await writer
        finally:
            db, self._db = self._db, None
            if db is not None:
                await self._disconnect(db)

    async def _write_loop(self) -> None:
        try:
            await self._write()
        except asyncio.CancelledError:
            # The loop is going away and cancels its tasks, but still runs them to the end:
            # close the store properly before leaving.
            db, self._db = self._db, None
            if db is not None:
                try:
                    await self._disconnect(db)
                except BaseException:
                    self._disconnect_now(db)
            raise

    def close_now(self) -> None:
        """Close the store without the loop (it is stopping or gone): what is not written
        yet is lost, and said so."""
        self._holders.clear()
        writer, self._writer = self._writer, None
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop
            current = None
        if (
            writer is not None
            and writer is not current
            and not writer.done()
            and not writer.get_loop().is_closed()
        ):
            writer.cancel()
        db, self._db = self._db, None
        if db is not None:
            self._disconnect_now(db)
        unwritten = self._unwritten()
        if unwritten:
            logger.warning(
                "Run history %r: %d record(s) not written, the event loop stopped before "
                "the history could be closed",
                self.location,
                unwritten,
            )
            self._forget_unwritten()

    # the writer -------------------------------------------------------------------------

    async def _write(self) -> None:
        assert self._wake is not None
        failures = (self.store_error, OSError, HistoryUnavailableError)
        while True:
            if self._db is None or not self._usable(self._db):
                try:
                    await self._reconnect()
                except failures as exc:
                    self._unavailable(exc)
                    self._opened.set()  # queries stop waiting: they answer the error
                    if self._closing and not await self._try_again_before_closing():
                        return
                    if not self._closing:
                        await self._sleep(self.retry_interval)
                    continue
                self._writable_again()
            self._opened.set()
            try:
                if self._live and not self._buffered():
                    async with self._lock:
                        await self._check_store()  # keep the rows of runs under way safe
                await self._flush()
                await self._maintain()
            except failures as exc:
                self._unavailable(exc)
                if self._closing and not await self._try_again_before_closing():
                    return
                if not self._closing:
                    await self._sleep(self.retry_interval)
                continue
            self._writable_again()
            if self._closing and not self._buffered():
                return
            self._wake.clear()
            self._poked = False
            if not self._buffered() and not self._closing:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
            # Gather for one interval before writing, so that a burst of runs is over
            # before its rows are written (the write holds the GIL on another thread).
            await self._collect()

    async def _reconnect(self) -> None:
        old, self._db = self._db, None
        if old is not None:  # one the server dropped
            with contextlib.suppress(self.store_error, OSError):
                await self._disconnect(old)
        self._db = await self._connect()

    async def _try_again_before_closing(self) -> bool:
        """Closing, and the store refused the last write (another process holds the
        file, as workers sharing one history file do; the server is down): try again for
        :data:`CLOSING_PATIENCE` seconds, then give up, saying how many records are lost."""
        now = time.monotonic()
        if self._close_deadline is None:
            self._close_deadline = now + CLOSING_PATIENCE
        if now < self._close_deadline:
            await asyncio.sleep(CLOSING_RETRY)
            return True
        lost = self._unwritten()
        if lost:
            logger.warning(
                "Run history %r: %d record(s) not written before closing (%s)",
                self.location,
                lost,
                self.error,
            )
        return False

    def _writable_again(self) -> None:
        if self.error is not None:
            logger.warning("Run history %r is writable again", self.location)
            self.error = None

    async def _sleep(self, seconds: float) -> None:
        """Wait before retrying the store; only a stop cuts it short (new records don't)."""
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _collect(self) -> None:
        assert self._stopping is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.flush_interval)
        # A burst of runs still under way (more than BURST_RATE records a second): wait
        # for it to end, up to BURST_WAIT intervals in all. The write holds the GIL on
        # the client's thread for much of its time, which would slow the burst's dispatch.
        deadline = time.monotonic() + self.flush_interval * BURST_WAIT
        while not self._stopping.is_set() and time.monotonic() < deadline:
            before = self._recorded
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), BURST_PROBE)
            if self._recorded - before < BURST_RATE * BURST_PROBE:
                return

    def _unavailable(self, exc: BaseException) -> None:
        message = f"run history {self.location!r} cannot be used: {type(exc).__name__}: {exc}"
        if message != self.error:
            logger.error("%s; jobs keep running, runs are kept in memory meanwhile", message)
        self.error = message

    async def _flush(self) -> None:
        """Write what was recorded since the last flush, in one transaction."""
        if self._db is None or not self._buffered():
            return
        async with self._lock:
            await self._check_store()
            db = self._db
            if db is None:
                return
            starts, self._starts = self._starts, {}
            finishes, self._finishes = self._finishes, []
            try:
                await self._store(db, list(starts.values()), finishes)
            except BaseException:
                # Keep them for the next try (the store may be back in a moment).
                self._starts = {**starts, **self._starts}
                self._finishes = finishes + self._finishes
                raise

    async def _retention(self) -> None:
        if not (self.keep_runs or self.keep_days) or self._db is None:
            return
        now = time.monotonic()
        if now - self._last_retention < self.retention_interval and not self._closing:
            return
        self._last_retention = now
        await self.enforce_retention()

    async def enforce_retention(self) -> int:
        """Delete runs beyond ``keep_runs`` per job and older than ``keep_days`` (runs
        under way are kept, and count for neither)."""
        if self._db is None:
            return 0
        await self._flush()  # the limits apply to runs still in the buffer too
        statements = self.sql.retention(self.keep_runs, self.keep_days)
        async with self._lock:
            db = self._db  # the flush may have reopened the store
            if db is None or not statements:
                return 0
            return await self._delete(db, statements)

    # queries ----------------------------------------------------------------------------

    async def _ready(self) -> None:
        if self._db is None and self._writer is not None and not self._opened.is_set():
            # Just started: wait for the writer's first attempt to open the store.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._opened.wait(), OPEN_WAIT)
        if self._db is None:
            raise HistoryUnavailableError(self.error or "run history is not open")
        try:
            await self._flush()
        except (self.store_error, OSError) as exc:
            self._unavailable(exc)
            raise HistoryUnavailableError(self.error or str(exc)) from exc

    async def _fetch(self, sql: str, params: Iterable[Any]) -> list[Any]:
        await self._ready()
        try:
            # Under the lock: a flush may close this connection (a file replaced).
            async with self._lock:
                db = self._db
                if db is None:  # the file was replaced and the new one cannot be opened
                    raise HistoryUnavailableError(self.error or "run history is not open")
                return await self._query(db, sql, tuple(params))
        except self.store_error as exc:
            if self._wake is not None:
                self._wake.set()  # the writer looks at the connection now
            raise HistoryUnavailableError(
                f"run history {self.location!r} cannot be read: {type(exc).__name__}: {exc}"
            ) from exc

    async def runs(
        self,
        job_id: str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        outcome: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> RunPage:
        """Runs newest first, of one job or all, filtered by outcome and start time."""
        sql, params = self.sql.page(job_id, outcome, since, until, cursor)
        rows = await self._fetch(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0]) if more and rows else None
        return RunPage([_row_to_dict(row) for row in rows], next_cursor)

    async def running(self) -> list[dict[str, Any]]:
        """Runs under way now, as recorded (by every process writing this store)."""
        rows = await self._fetch(self.sql.running, [RUNNING])
        return [_row_to_dict(row) for row in rows]

    async def last_runs(self, job_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The latest run of each job that has one."""
        ids = list(dict.fromkeys(job_ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            for row in await self._fetch(self.sql.last_runs(len(chunk)), chunk):
                run = _row_to_dict(row)
                found[run["job_id"]] = run
        return found


class RunHistory(BufferedRecorder[aiosqlite.Connection]):
    """Records runs in ``path`` (a file, or ``":memory:"``) and answers queries about them.

    ``keep_runs`` keeps that many runs per job, ``keep_days`` drops runs older than that
    (None: no limit); both are enforced by the writer, off the loop.
    """

    sql = Statements("runs", "?")
    store_error = sqlite3.Error

    def __init__(self, path: str, *, host: str, **options: Unpack[RecorderOptions]) -> None:
        super().__init__(host=host, **options)
        self.path = path
        self._rewrite: dict[str, Row] = {}  # for a recreated file
        self._files: _Files | None = None  # what was at path (and its WAL) when opened

    @property
    def location(self) -> str:
        return self.path

    def _unwritten(self) -> int:
        return super()._unwritten() + len(self._rewrite)

    def _forget_unwritten(self) -> None:
        super()._forget_unwritten()
        self._rewrite.clear()

    def _buffered(self) -> bool:
        return bool(self._starts or self._finishes or self._rewrite)

    def _idle_timeout(self) -> float | None:
        timeout = super()._idle_timeout()
        if self._live and self._files is not None:
            # While runs are under way, look at the file now and then even if nothing is
            # written: their `running` rows are what marks them interrupted after a crash.
            timeout = min(timeout or self.retry_interval, self.retry_interval)
        return timeout

    async def _connect(self) -> aiosqlite.Connection:
        if self.path != ":memory:":
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        connection = aiosqlite.connect(self.path, timeout=1.0)
        # Its worker thread is not a daemon: one left waiting (a connect cancelled half-way,
        # a loop that died) would keep the process from exiting. SQLite's journal makes an
        # abrupt end at exit safe.
        thread = getattr(connection, "_thread", None)
        if isinstance(thread, threading.Thread):
            thread.daemon = True
        try:
            db = await connection
            if self.path != ":memory:":
                await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await self._migrate(db)
            await self._mark_interrupted(db)
            self._files = None if self.path == ":memory:" else await _identify(self.path)
        except BaseException:
            _stop(connection)
            raise
        return db

    async def _disconnect(self, db: aiosqlite.Connection) -> None:
        await db.close()

    def _disconnect_now(self, db: aiosqlite.Connection) -> None:
        _stop(db)

    async def _check_store(self) -> None:
        """Reopen the file if it was deleted or replaced since it was opened.

        Otherwise every run would go on being written into a file no one can open again,
        and be lost with it, the ``running`` rows that mark killed runs included. The runs
        under way and those finished since the last write go into the new file.
        """
        opened = self._files
        if opened is None or opened.main is None or self._db is None:
            return
        now = await _identify(self.path)
        if now.main == opened.main:
            return
        logger.warning(
            "Run history %r was deleted or replaced while in use: writing to a new file "
            "there from now on (%d run(s) under way recorded again)",
            self.path,
            len(self._live),
        )
        old, self._db, self._files = self._db, None, None
        # Runs whose rows were in the old file only: those under way, those finished since.
        rows = [row for run_id, row in self._live.items() if run_id not in self._starts]
        rows += self._finishes
        self._finishes = []
        for row in sorted(rows, key=lambda row: row[6]):  # by start, as first written
            self._rewrite[row[0]] = row
        try:
            await old.close()
        except sqlite3.Error:
            _stop(old)
        # SQLite leaves the old file's WAL and shared memory behind when that file has
        # been unlinked or renamed, and would replay that WAL into the new file there.
        await asyncio.to_thread(_remove_stale_wal, self.path, opened)
        self._db = await self._connect()

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        # Under the write lock: processes that start together (workers forked from one
        # parent) would otherwise all see version 0 and all create the tables.
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise HistoryUnavailableError(
                    f"run history {self.path!r} has schema version {version}, newer than "
                    f"this quart_sched's {SCHEMA_VERSION}: upgrade quart_sched or use "
                    "another file"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {target}")
            await db.commit()
        except BaseException:
            await _rollback(db)
            raise

    async def _mark_interrupted(self, db: aiosqlite.Connection) -> None:
        """Runs left ``running`` by a process of this host that has ended were interrupted
        (a worker killed mid-run); those of live processes, this one included, go on."""
        async with db.execute(self.sql.writers, (RUNNING, self.host)) as cursor:
            dead = dead_processes(await cursor.fetchall())
        if not dead:
            return
        cursor = await db.execute(
            f"{self.sql.interrupt} AND host = ? AND process IN ({','.join('?' * len(dead))})",
            (RUNNING, self.host, *dead),
        )
        await db.commit()
        log_interrupted(cursor.rowcount)

    async def _store(
        self, db: aiosqlite.Connection, starts: list[Row], finishes: list[Row]
    ) -> None:
        rewrite, self._rewrite = self._rewrite, {}
        try:
            if rewrite:
                await db.executemany(_REWRITE, list(rewrite.values()))
            if starts:
                await self._insert(db, starts)
            if finishes:
                await db.executemany(self.sql.finish, finish_params(finishes))
            await db.commit()
        except BaseException:
            # Keep them for the next try (the file may be locked for a moment).
            await _rollback(db)
            self._rewrite = {**rewrite, **self._rewrite}
            raise

    async def _insert(self, db: aiosqlite.Connection, rows: list[Row]) -> None:
        """INSERT new rows. A run id already in the file belongs to another run (run ids
        are unique, so only a copied file or a bug gets there): that row is kept, ours is
        not written, and the error is logged instead of silently replacing it."""
        before = db.total_changes
        try:
            await db.executemany(self.sql.insert, rows)
        except sqlite3.IntegrityError:
            # The rows before the clash are in (same transaction): they are ignored now.
            await db.executemany(_INSERT_OR_IGNORE, rows)
            log_clash(self.path, len(rows) - (db.total_changes - before))

    async def _query(
        self, db: aiosqlite.Connection, sql: str, params: tuple[Any, ...]
    ) -> list[Any]:
        async with db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _delete(
        self, db: aiosqlite.Connection, statements: list[tuple[str, tuple[Any, ...]]]
    ) -> int:
        deleted = 0
        try:
            for sql, params in statements:
                cursor = await db.execute(sql, params)
                deleted += max(cursor.rowcount, 0)
            await db.commit()
        except BaseException:
            await _rollback(db)
            raise
        return deleted


#: What SCHEDULER_HISTORY names a PostgreSQL database by: postgresql://, postgres://, and
#: SQLAlchemy's postgresql+psycopg:// (any +driver).
def make_recorder(
    location: str, *, keep_runs: int | None, keep_days: float | None, host: str
) -> RunRecorder:
    """The run history at ``location`` (``SCHEDULER_HISTORY``): a PostgreSQL URL gives one
    shared by every host (it needs psycopg: ``quart-sched[postgresql]``); anything else is
    a SQLite file path, or ``":memory:"``."""
    if not is_postgresql_url(location):
        return RunHistory(location, keep_runs=keep_runs, keep_days=keep_days, host=host)
    try:
        from ._history_pg import PostgresRunHistory
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("psycopg"):
            raise
        raise ConfigurationError(
            "SCHEDULER_HISTORY is a PostgreSQL URL, which needs psycopg 3: "
            "pip install 'quart-sched[postgresql]'"
        ) from exc
    return PostgresRunHistory(location, keep_runs=keep_runs, keep_days=keep_days, host=host)


class _Files(NamedTuple):
    """(st_dev, st_ino) of a history file, its WAL and its shared memory (None: absent).
    Another file at the same path has another pair."""

    main: tuple[int, int] | None
    wal: tuple[int, int] | None
    shm: tuple[int, int] | None


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


async def _identify(path: str) -> _Files:
    def identify() -> _Files:
        return _Files(_file_id(path), _file_id(f"{path}-wal"), _file_id(f"{path}-shm"))

    return await asyncio.to_thread(identify)


def _remove_stale_wal(path: str, opened: _Files) -> None:
    """Remove the WAL and shared memory of the file opened before, if still there. Those
    of a file another process has created there since are other files: they stay."""
    for suffix, before in (("-wal", opened.wal), ("-shm", opened.shm)):
        if before is not None and _file_id(path + suffix) == before:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)


def _stop(connection: aiosqlite.Connection) -> None:
    """Close ``connection`` and end its thread without awaiting: stop() does it on the
    connection's own thread. Called from a thread with no event loop, it ties no future to
    a loop that may be closed already."""
    closer = threading.Thread(target=connection.stop, name="quart_sched-history-close")
    closer.start()
    closer.join()


async def _rollback(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        await db.rollback()
