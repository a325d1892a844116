"""Helpers on APScheduler's ``Job`` objects."""

from __future__ import annotations

from apscheduler.job import Job


def copy_job(job: Job) -> Job:
    """A shallow copy that works for pending jobs too (their __getstate__ does not)."""
    copied: Job = object.__new__(type(job))
    for slot in type(job).__slots__:
        if slot != "__weakref__" and hasattr(job, slot):
            setattr(copied, slot, getattr(job, slot))
    return copied
