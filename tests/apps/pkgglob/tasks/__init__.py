"""An allowed package of job functions (``SCHEDULER_API_ALLOWED_FUNCS = ["pkgglob.tasks:*"]``)."""

from __future__ import annotations

import threading

#: The thread that imported this package: the API must import off the serving loop.
IMPORTED_BY = threading.current_thread()
CALLS: list[str] = []


def job(*args: object, **kwargs: object) -> None:
    CALLS.append("job")


def _private(*args: object, **kwargs: object) -> None:
    CALLS.append("_private")
