"""With coordination off, a lock file tells a process that another one runs the same jobs."""

from __future__ import annotations

import os

from .file import LockFile


class SoloLock:
    """An exclusive lock on ``quart_sched-<key>.solo`` in the instance folder, held while
    the scheduler runs: a second process of the same app on this host cannot take it."""

    def __init__(self, directory: str, key: str) -> None:
        self.directory = directory
        self._lock = LockFile(os.path.join(directory, f"quart_sched-{key}.solo"))

    def acquire(self) -> bool:
        """True if no other process of this host holds it (also when it cannot be made)."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            return self._lock.try_lock()
        except OSError:
            return True

    def release(self) -> None:
        self._lock.unlock()
