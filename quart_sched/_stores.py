"""Store access: every call into a persistent job store runs on that store's own thread.

APScheduler 3's job stores are synchronous. Called on the serving loop, a locked SQLite
file or a database that stopped answering freezes the whole app; called from whichever
thread happens to ask, a store whose connections belong to one thread (``sqlite://``,
in memory) shows each thread a different, empty database.

So each persistent store is wrapped in a :class:`ThreadBoundStore`: a proxy that sends
every store method to one :class:`StoreWorker`, a single thread that runs the calls in
the order they were made. The scheduler's wake-up work and the REST API call the proxy
from worker threads (never from the loop), so the loop never waits on a store; a sync
method of the extension called on the loop waits for the store's thread, as
Flask-APScheduler's would wait for the store itself.

Memory stores are not wrapped: they never block.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import pickle
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.util import datetime_to_utc_timestamp

from .errors import JobStoreUnavailableError

T = TypeVar("T")

#: The job store methods of APScheduler 3's BaseJobStore that do I/O.
STORE_METHODS = (
    "start",
    "shutdown",
    "lookup_job",
    "get_due_jobs",
    "get_next_run_time",
    "get_all_jobs",
    "add_job",
    "update_job",
    "remove_job",
    "remove_all_jobs",
)


class StoreWorker:
    """One thread running calls in order. Calls made on that thread run at once."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=self._name, initializer=self._remember_thread
                )
            return self._pool

    def _remember_thread(self) -> None:
        self._thread = threading.current_thread()

    def call(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``func`` on the worker's thread and wait for its result."""
        if threading.current_thread() is self._thread:
            return func(*args, **kwargs)
        return self._executor().submit(func, *args, **kwargs).result()

    def close(self) -> None:
        """Let queued calls finish, then end the thread (a later call starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=threading.current_thread() is not self._thread)
        self._thread = None


class ThreadBoundStore(BaseJobStore):  # type: ignore[misc]
    """A persistent job store whose every call runs on one :class:`StoreWorker`.

    Attributes other than the store methods (``pickle_protocol``, ``engine``, …) are the
    wrapped store's. ``wrapped`` is the user's store itself.
    """

    def __init__(self, wrapped: Any, worker: StoreWorker) -> None:
        # BaseJobStore.__init__ only sets a logger; the wrapped store has its own.
        self.wrapped = wrapped
        self.worker = worker

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class does not define: the wrapped store's attributes.
        if name in ("wrapped", "worker"):
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def start(self, scheduler: Any, alias: str) -> None:
        self.worker.call(self.wrapped.start, scheduler, alias)

    def shutdown(self) -> None:
        try:
            self.worker.call(self.wrapped.shutdown)
        finally:
            self.worker.close()

    def lookup_job(self, job_id: str) -> Any:
        return self.worker.call(self.wrapped.lookup_job, job_id)

    def get_due_jobs(self, now: Any) -> Any:
        return self.worker.call(self.wrapped.get_due_jobs, now)

    def get_next_run_time(self) -> Any:
        return self.worker.call(self.wrapped.get_next_run_time)

    def get_all_jobs(self) -> Any:
        return self.worker.call(self.wrapped.get_all_jobs)

    def add_job(self, job: Any) -> None:
        self.worker.call(self.wrapped.add_job, job)

    def update_job(self, job: Any) -> None:
        self.worker.call(self.wrapped.update_job, job)

    def remove_job(self, job_id: str) -> None:
        self.worker.call(self.wrapped.remove_job, job_id)

    def remove_all_jobs(self) -> None:
        self.worker.call(self.wrapped.remove_all_jobs)


def bind_to_thread(store: Any, alias: str) -> Any:
    """``store`` wrapped for :class:`ThreadBoundStore` access; memory stores as they are."""
    if isinstance(store, (MemoryJobStore, ThreadBoundStore)) or not isinstance(
        store, BaseJobStore
    ):
        return store
    return ThreadBoundStore(store, StoreWorker(f"quart_sched-store-{alias}"))


def unwrap(store: Any) -> Any:
    """The user's store behind a :class:`ThreadBoundStore` (or ``store`` itself)."""
    return store.wrapped if isinstance(store, ThreadBoundStore) else store


def is_persistent(store: Any) -> bool:
    """True for stores whose calls may block (anything but a memory store)."""
    return not isinstance(unwrap(store), MemoryJobStore)


#: Packages whose exceptions mean "the job store cannot be reached", not "bad request".
STORE_ERROR_MODULES = ("sqlalchemy", "sqlite3", "redis", "pymongo", "psycopg", "kazoo", "etcd")


def store_error(exc: Exception) -> Exception:
    """``exc`` as :class:`JobStoreUnavailableError` when a job store's driver raised it."""
    if isinstance(exc, OSError) or type(exc).__module__.startswith(STORE_ERROR_MODULES):
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's wraps the driver's
        return JobStoreUnavailableError(
            f"the job store cannot be reached ({type(cause).__name__}); try again later"
        )
    return exc


def due_jobs(store: Any, now: datetime, limit: int | None = None) -> tuple[list[Job], bool]:
    """The jobs of ``store`` due at ``now``, in order; and whether more are due than the
    ``limit`` taken (APScheduler's memory store only: it is read on the loop, so a large
    due batch is taken a slice at a time; other stores give all their due jobs)."""
    if limit is None or type(store) is not MemoryJobStore:
        return store.get_due_jobs(now), False
    stamp = datetime_to_utc_timestamp(now)
    jobs: list[Job] = []
    for job, timestamp in store._jobs:
        if timestamp is None or timestamp > stamp:
            break
        if len(jobs) == limit:
            return jobs, True
        jobs.append(job)
    return jobs, False


def upcoming_jobs(
    store: Any, after: datetime, until: datetime
) -> tuple[list[Job], datetime | None]:
    """The jobs of APScheduler's memory store whose next run time is after ``after`` and
    no later than ``until``, in order; and the next run time after ``until`` (None:
    none). Other stores: none (reading them is I/O, and their jobs are not known ahead)."""
    if type(store) is not MemoryJobStore:
        return [], None
    low, high = datetime_to_utc_timestamp(after), datetime_to_utc_timestamp(until)
    jobs: list[Job] = []
    for job, timestamp in store._jobs:
        if timestamp is None:
            break
        if timestamp > high:
            return jobs, job.next_run_time
        if timestamp > low:
            jobs.append(job)
    return jobs, None


class DueWrites:
    """The writes one wake-up pass makes to the due jobs it took from one store: each
    one removed (no next run) or updated (its next run time).

    A store gets each write at once, except APScheduler's own memory store, which gets
    them together when the pass is flushed (:meth:`flush`), before any of the runs starts. Its
    due jobs are the head of its sorted list: one slice takes them all out and the ones
    with a next run go back in order, where ``remove_job``/``update_job`` would search
    the list for each job (a binary search in Python, costing more than the dispatch of
    the run itself in a burst).
    """

    __slots__ = ("_due", "_removed", "_store", "_updated")

    def __init__(self, store: Any, due: int) -> None:
        self._store = store
        #: How many jobs at the head of a memory store's list the pass took (None: write
        #: through).
        self._due = due if type(store) is MemoryJobStore else None
        self._removed: list[str] = []
        self._updated: list[Job] = []

    def remove(self, job_id: str, was: datetime | None = None) -> None:
        """Remove the job; ``was``: the next run time it was taken at (see update)."""
        if self._due is not None:
            self._removed.append(job_id)
        elif was is not None and _sql_store(self._store) is not None:
            self._store.worker.call(_write_if_unchanged, self._store.wrapped, job_id, None, was)
        else:
            self._store.remove_job(job_id)

    def update(self, job: Job, was: datetime | None = None) -> None:
        """Write the job's new next run time. With ``was`` (the next run time it was taken
        at), a SQLAlchemy store is written only if its row still holds that time: another
        process may have paused, rescheduled or removed the job since it was read, and
        its write must not be undone. :raises JobLookupError: if it was."""
        if self._due is not None:
            self._updated.append(job)
        elif was is not None and _sql_store(self._store) is not None:
            self._store.worker.call(_write_if_unchanged, self._store.wrapped, job.id, job, was)
        else:
            self._store.update_job(job)

    def flush(self) -> None:
        """Apply the held writes (a memory store's) to the store."""
        if self._due is None or not (self._removed or self._updated):
            return
        store, removed, updated = self._store, self._removed, self._updated
        self._removed, self._updated = [], []
        jobs: list[tuple[Job, float | None]] = store._jobs
        index: dict[str, tuple[Job, float | None]] = store._jobs_index
        changed = set(removed)
        changed.update(job.id for job in updated)
        entries = [entry for entry in jobs[: self._due] if entry[0].id not in changed]
        del jobs[: self._due]
        for job_id in removed:
            del index[job_id]
        for job in updated:
            entry = (job, datetime_to_utc_timestamp(job.next_run_time))
            index[job.id] = entry
            entries.append(entry)
        if len(entries) * 16 < len(jobs):
            for entry in entries:
                bisect.insort(jobs, entry, key=_memory_order)
        else:
            jobs.extend(entries)
            jobs.sort(key=_memory_order)


def _sql_store(store: Any) -> Any:
    """APScheduler's SQLAlchemy store behind ``store`` (a ThreadBoundStore), or None."""
    if not isinstance(store, ThreadBoundStore):
        return None
    wrapped = store.wrapped
    return wrapped if type(wrapped).__module__ == "apscheduler.jobstores.sqlalchemy" else None


def _write_if_unchanged(store: Any, job_id: str, job: Job | None, was: datetime) -> None:
    """On the store's thread: update ``job`` (None: delete the row of ``job_id``) only if
    the row's next run time is still ``was``, in one statement.

    :raises JobLookupError: if no row matched (changed or removed meanwhile)
    """
    table = store.jobs_t
    where = (table.c.id == job_id) & (table.c.next_run_time == datetime_to_utc_timestamp(was))
    if job is None:
        statement = table.delete().where(where)
    else:
        statement = (
            table.update()
            .values(
                job_state=pickle.dumps(job.__getstate__(), store.pickle_protocol),
                next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            )
            .where(where)
        )
    with store.engine.begin() as connection:
        if connection.execute(statement).rowcount == 0:
            raise JobLookupError(job_id)


def _memory_order(entry: tuple[Job, float | None]) -> tuple[float, str]:
    """The order of a memory store's list (as its ``_get_job_index`` searches it)."""
    timestamp = entry[1]
    return (float("inf") if timestamp is None else timestamp, entry[0].id)
