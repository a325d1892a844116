"""Steering from another process: the job stores opened without running the scheduler.

``quart scheduler`` (the CLI) reads and writes the jobs that a server or worker process
runs: it opens the job stores, and job calls then go to them, while nothing runs on its
own and the jobs declared in code or config are never written over the stored ones.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from apscheduler.events import EVENT_JOB_REMOVED, JobEvent
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_STOPPED

from .._stores import unwrap
from ..errors import JobStoreUnavailableError, SchedulerAlreadyRunningError
from .executor import Batch, QuartExecutor, drain
from .jobs import copy_job


class StoresOnly(AsyncIOScheduler):  # type: ignore[misc]
    """Open the stores without the scheduler; job calls then go to the stores."""

    _eventloop: asyncio.AbstractEventLoop | None
    #: True between open_stores() and close_stores(): job calls go to the stores.
    _stores_open = False

    @property
    def stores_open(self) -> bool:
        """True between :meth:`open_stores` and :meth:`close_stores`."""
        return self._stores_open

    def open_stores(self) -> None:
        """Open the job stores (and start the executors) without starting the scheduler.

        For a process that steers jobs another process runs (``quart scheduler``): job
        calls then read and write the stores, nothing runs on its own, :meth:`run_job_now`
        works, and jobs declared in code or config are *not* written over the stored ones
        (no next run time reset, no pause undone). In-memory stores show the jobs this
        process declared, as the process running them has them; changing those is
        refused, since that process would never see the change. Call on the loop that
        runs :meth:`run_job_now`'s jobs; await :meth:`close_stores` when done.
        """
        if self.state != STATE_STOPPED or self._stores_open:
            raise SchedulerAlreadyRunningError
        self._eventloop = asyncio.get_running_loop()
        with self._executors_lock:
            if "default" not in self._executors:
                self.add_executor(self._create_default_executor(), "default")
            for alias, executor in self._executors.items():
                executor.start(self, alias)
        with self._jobstores_lock:
            if "default" not in self._jobstores:
                self.add_jobstore(self._create_default_jobstore(), "default")
            opened: list[Any] = []
            try:
                for alias, store in self._jobstores.items():
                    store.start(self, alias)
                    opened.append(store)
            except BaseException:
                self._close_stores(opened)
                self._stop_executors_now()
                self._eventloop = None
                raise
            self._show_declared_memory_jobs()
        self._stores_open = True

    def _show_declared_memory_jobs(self) -> None:
        """Put copies of the declared jobs of in-memory stores in them, completed as a
        start would (defaults, next run time); the declarations stay pending."""
        now = datetime.now(self.timezone)
        for job, alias, _replace in self._pending_jobs:
            store = self._jobstores.get(alias)
            if not isinstance(store, MemoryJobStore):
                continue
            shown = copy_job(job)
            changes = {k: v for k, v in self._job_defaults.items() if not hasattr(shown, k)}
            if not hasattr(shown, "next_run_time"):
                changes["next_run_time"] = shown.trigger.get_next_fire_time(None, now)
            shown._modify(**changes)
            shown._jobstore_alias = alias
            try:
                store.add_job(shown)
            except ConflictingIdError:
                store.update_job(shown)

    async def close_stores(self) -> None:
        """Undo :meth:`open_stores`: runs started meanwhile get ``shutdown_timeout``
        seconds to finish, then the stores close."""
        if not self._stores_open:
            return
        self._stores_open = False
        batches = self._stop_executors_now()
        await asyncio.gather(*(drain(batch, self.shutdown_timeout) for batch in batches))
        self._eventloop = None
        with self._jobstores_lock:
            for store in self._jobstores.values():
                if isinstance(store, MemoryJobStore):
                    store.remove_all_jobs()  # the copies; the declarations are pending
        self._close_stores(list(self._jobstores.values()))

    def _stop_executors_now(self) -> list[Batch]:
        """Stop every executor taking runs; the runs under way are returned to drain."""
        batches = []
        with self._executors_lock:
            for executor in self._executors.values():
                if isinstance(executor, QuartExecutor):
                    batch = executor.detach()
                    if batch is not None:
                        batches.append(batch)
                else:
                    executor.shutdown(wait=False)
        return batches

    def probe_stores(self) -> dict[str, tuple[str, str | None]]:
        """Ask every job store one cheap question: alias -> (the store's class name, what
        failed or None). Reads no job, so it neither loads functions nor lets a store drop
        a job it cannot load."""
        probed: dict[str, tuple[str, str | None]] = {}
        for alias, store in list(self._jobstores.items()):
            problem = None
            try:
                store.get_next_run_time()
            except Exception as exc:
                cause = getattr(exc, "orig", None) or exc
                problem = f"{type(cause).__name__}: {cause}"
            probed[alias] = (type(unwrap(store)).__name__, problem)
        return probed

    def _stores_only(self) -> bool:
        return self._stores_open and self.state == STATE_STOPPED

    def _check_store_write(self, job_id: str, jobstore: str | None) -> None:
        if not self._stores_only():
            return
        _job, alias = self._lookup_job(job_id, jobstore)
        if isinstance(self._jobstores.get(alias), MemoryJobStore):
            raise JobStoreUnavailableError(
                f"Job {job_id!r} is in the in-memory job store {alias!r}, which lives in the "
                "process that runs it: a change made here would not reach it. Configure a "
                "persistent job store (SCHEDULER_JOBSTORES) to steer it from another process."
            )

    def get_jobs(self, jobstore: str | None = None, pending: Any = None) -> list[Job]:
        if not self._stores_only():
            jobs: list[Job] = super().get_jobs(jobstore, pending)
            return jobs
        with self._jobstores_lock:
            found: list[Job] = []
            for alias, store in self._jobstores.items():
                if jobstore in (None, alias):
                    found += store.get_all_jobs()
            return found

    def _lookup_job(self, job_id: str, jobstore_alias: str | None) -> tuple[Job, str | None]:
        if not self._stores_only():
            found: tuple[Job, str | None] = super()._lookup_job(job_id, jobstore_alias)
            return found
        for alias, store in self._jobstores.items():
            if jobstore_alias in (None, alias):
                job = store.lookup_job(job_id)
                if job is not None:
                    return job, alias
        raise JobLookupError(job_id)

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        if not self._stores_only():
            super().remove_job(job_id, jobstore)
            return
        with self._jobstores_lock:
            self._check_store_write(job_id, jobstore)
            _job, alias = self._lookup_job(job_id, jobstore)
            assert alias is not None
            self._lookup_jobstore(alias).remove_job(job_id)
        self._dispatch_event(JobEvent(EVENT_JOB_REMOVED, job_id, alias))
