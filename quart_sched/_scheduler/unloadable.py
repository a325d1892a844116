"""Stored jobs whose code or arguments cannot be loaded are kept, not deleted."""

from __future__ import annotations

import io
import logging
import pickle
from typing import Any

from apscheduler.job import Job

from ..errors import (
    JobNotLoadableError,
)

logger = logging.getLogger("quart_sched")


class UnloadableJob(Job):  # type: ignore[misc]
    """A stored job whose function or arguments cannot be loaded now.

    APScheduler deletes such jobs from their store; quart_sched keeps them there, never
    runs or rewrites them, and loads them again on every pass until their code is back.
    ``load_error`` says why it failed.
    """

    __slots__ = ("load_error",)
    load_error: str


def load_error(job: Job) -> str | None:
    """Why ``job`` could not be loaded from its store, or None for a job that loaded."""
    return job.load_error if isinstance(job, UnloadableJob) else None


class _Missing:
    """Stands in for a class that a stored job's state names and that cannot be imported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<missing {type(self).__qualname__}>"


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except Exception:
            return type(f"{module}.{name}", (_Missing,), {})


def _unloadable(store: Any, job_state: bytes, error: BaseException) -> UnloadableJob:
    state = _LenientUnpickler(io.BytesIO(job_state)).load()
    job: UnloadableJob = UnloadableJob.__new__(UnloadableJob)
    job.id = state["id"]
    job.func_ref = state["func"]
    job.func = None
    job.trigger = state["trigger"]
    job.executor = state["executor"]
    job.args = state["args"]
    job.kwargs = state["kwargs"]
    job.name = state["name"]
    job.misfire_grace_time = state["misfire_grace_time"]
    job.coalesce = state["coalesce"]
    job.max_instances = state["max_instances"]
    job.next_run_time = state["next_run_time"]
    job._scheduler = store._scheduler
    job._jobstore_alias = store._alias
    job.load_error = f"{type(error).__name__}: {error}"
    return job


def keep_unloadable(store: Any) -> None:
    """Make a pickling job store hand back :class:`UnloadableJob` instead of deleting a job
    whose state fails to load (APScheduler's stores delete what ``_reconstitute_job``
    cannot rebuild)."""
    reconstitute = getattr(store, "_reconstitute_job", None)
    if reconstitute is None or getattr(reconstitute, "keeps_unloadable", False):
        return

    def reconstitute_or_keep(job_state: Any) -> Any:
        try:
            return reconstitute(job_state)
        except (Exception, SystemExit) as exc:  # a module may sys.exit() on import
            if not isinstance(job_state, bytes):
                raise
            try:
                return _unloadable(store, job_state, exc)
            except Exception:
                raise exc from None  # not even readable: APScheduler's handling

    reconstitute_or_keep.keeps_unloadable = True  # type: ignore[attr-defined]
    store._reconstitute_job = reconstitute_or_keep
    update_job = store.update_job

    def update_loadable_job(job: Job) -> None:
        if isinstance(job, UnloadableJob):  # its state would be written back half-read
            raise JobNotLoadableError(job.id, job.load_error)
        update_job(job)

    store.update_job = update_loadable_job
