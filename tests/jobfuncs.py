"""Job functions importable as ``jobfuncs:<name>``, as persistent job stores need.

The tests directory is on ``sys.path`` (pytest puts the rootdir conftest's folder there),
so a job store can resolve these by their textual reference after a restart.
"""

from __future__ import annotations

from collections import Counter

#: How many times each ``tick(name)`` ran, by name. Tests use names unique to them.
RUNS: Counter[str] = Counter()


async def tick(name: str) -> str:
    """A coroutine job that counts its runs under ``name``."""
    RUNS[name] += 1
    return name


def tick_sync(name: str) -> str:
    """A plain-function job that counts its runs under ``name`` (runs in a thread)."""
    RUNS[name] += 1
    return name


async def tick_with(name: str, *extra: object, **options: object) -> str:
    """Like :func:`tick`, taking any further arguments (for argument-storing tests)."""
    RUNS[name] += 1
    return name


def append_line(path: str, text: str) -> None:
    """Append ``text`` as one line to the file at ``path`` (used across processes)."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(f"{text}\n")
