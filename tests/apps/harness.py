"""Run a server as a real subprocess and watch its output, with a deadline on every wait.

Output is read by one thread per pipe, line by line, so a test can wait for a line
(or any condition on the lines so far) without fixed sleeps. The process gets its own
session: :meth:`Process.close` kills the whole group, workers included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

#: Upper bound for anything a test waits for: generous, as loaded CI machines are slow.
DEADLINE = 15.0


class Process:
    """A subprocess whose stdout and stderr lines are collected as they come."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        env: dict[str, str] | None = None,
    ) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONDONTWRITEBYTECODE"] = "1"
        full_env.update(env or {})
        self.args = list(args)
        self._changed = threading.Condition()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.popen = subprocess.Popen(
            self.args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read, args=(self.popen.stdout, self.stdout), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.popen.stderr, self.stderr), daemon=True
            ),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    # waiting ---------------------------------------------------------------------------

    def wait_for(
        self, condition: Callable[[], object], timeout: float = DEADLINE, what: str = ""
    ) -> None:
        """Wait until ``condition()`` is truthy; fail with the output so far after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{what or condition} not seen within {timeout} s\n{self.dump()}"
                    )
                # Also wake up now and then: the process may exit without writing.
                self._changed.wait(min(left, 0.1))

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        """The exit code; fail if the process still runs after ``timeout`` s."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process still running after {timeout} s\n{self.dump()}"
            ) from None
        for reader in self._readers:
            reader.join(timeout)  # the pipes close with the last process holding them
        return code

    def get(self, url: str, timeout: float = DEADLINE) -> httpx.Response:
        """GET ``url``, retrying while the server is not listening yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return httpx.get(url, timeout=2.0)
            except httpx.TransportError:
                if time.monotonic() > deadline or self.popen.poll() is not None:
                    raise
            time.sleep(0.05)

    # ending ----------------------------------------------------------------------------

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process itself (not its group), as ``kill`` would."""
        self.popen.send_signal(sig)

    def send_to_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the group, as systemd or a terminal would."""
        os.killpg(self.popen.pid, sig)

    def close(self) -> None:
        """Kill the whole process group if anything of it still runs, and reap it."""
        # Only while the leader is not reaped: its pid, hence the group id, is still ours.
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(DEADLINE)
        for reader in self._readers:
            reader.join(DEADLINE)
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.popen.stdout.close()
        self.popen.stderr.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def dump(self) -> str:
        return (
            f"$ {' '.join(self.args)}\n--- stdout ---\n"
            + "\n".join(self.stdout)
            + "\n--- stderr ---\n"
            + "\n".join(self.stderr)
        )


def python(*args: str | Path, cwd: str | os.PathLike[str], **env: str) -> Process:
    """``python ARGS`` with this interpreter (the venv's, so quart_sched is importable)."""
    return Process([sys.executable, *map(str, args)], cwd=cwd, env=env)


def hypercorn(
    app: str, port: int, *options: str, cwd: str | os.PathLike[str], **env: str
) -> Process:
    """``hypercorn APP`` bound to 127.0.0.1:``port``."""
    return python("-m", "hypercorn", "-b", f"127.0.0.1:{port}", *options, app, cwd=cwd, **env)
