"""Remembered results of pure functions of triggers, by object.

``GET /jobs`` shows every job's trigger twice (its fields, Flask-APScheduler's way, and
in words) on every call, and a cron trigger's take longer than the rest of its job's
JSON. A trigger is replaced, never changed, when its job is rescheduled, so what was
worked out for one trigger object holds as long as that object lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ByObject(Generic[T]):
    """``func(obj)``, remembered for the last ``size`` objects (kept alive here, so an
    ``id`` is never taken for another object's)."""

    def __init__(self, func: Callable[[Any], T], size: int = 10_000) -> None:
        self._func = func
        self._size = size
        self._known: dict[int, tuple[Any, T]] = {}

    def __call__(self, obj: Any) -> T:
        known = self._known.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        value = self._func(obj)
        if len(self._known) >= self._size:
            self._known.clear()
        self._known[id(obj)] = (obj, value)
        return value
