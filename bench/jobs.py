"""The functions the benchmarks schedule, and what they record.

They live at module level so that every job store can reference them as
``bench.jobs:<name>``. Each measurement runs in its own process, so the recorders are
plain module globals that the scenario sets up before starting a scheduler.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from typing import Any


class Burst:
    """Start times of ``n`` jobs, and an event set when the last one has run."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.starts = [math.nan] * n
        self._count = itertools.count(1)  # next() on a count is atomic under the GIL
        self.done = threading.Event()
        #: CPU seconds from the due time to the last run: the process's, the loop thread's.
        self.cpu = math.nan
        self.loop_cpu = math.nan

    def record(self, i: int) -> None:
        self.starts[i] = time.time()
        if next(self._count) == self.n:
            self.done.set()


class Steady:
    """(wall time, lateness) of every run of periodic jobs."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float]] = []
        #: quart-tasks: the time each task's current run was due, by task name.
        self.targets: dict[str, float] = {}


BURST: Burst | None = None
STEADY = Steady()
LOOP_RUNS = itertools.count()


# burst: one date-triggered run each ---------------------------------------------------


async def burst_coro(i: int) -> None:
    assert BURST is not None
    BURST.record(i)


def burst_plain(i: int) -> None:
    assert BURST is not None
    BURST.record(i)


# steady: interval jobs whose fire times are anchor + k * period ------------------------


async def steady_coro(anchor: float, period: float) -> None:
    now = time.time()
    # APScheduler's interval trigger fires exactly on this grid, so the latest grid
    # point at or before now is the run's scheduled time.
    late = (now - anchor) % period
    if late > period - 0.001:  # a float rounding just below a grid point, not 999 ms late
        late -= period
    STEADY.runs.append((now, late))


async def steady_task(name: str) -> None:
    """quart-tasks' version: its schedule is "last start + period", kept by our store."""
    now = time.time()
    STEADY.runs.append((now, now - STEADY.targets[name]))


# loop health: blocking work in plain functions -------------------------------------------


def block_sleep(seconds: float) -> None:
    time.sleep(seconds)
    next(LOOP_RUNS)


def block_cpu(seconds: float) -> None:
    """Burn CPU in pure Python (holding the GIL) for ``seconds`` of wall time."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1
    next(LOOP_RUNS)


# API and persistence -------------------------------------------------------------------


def noop(*args: Any, **kwargs: Any) -> None:
    """A job that does nothing: the API and store benchmarks never let it run."""


# store outage: when each fire ran ------------------------------------------------------

#: Wall time of every run of the store-outage jobs.
OUTAGE_FIRES: list[float] = []


async def outage_fire() -> None:
    OUTAGE_FIRES.append(time.time())


# scale: when each job ran -------------------------------------------------------------

#: (job index, start time) of every run of the scale scenario's jobs.
SCALE_RUNS: list[tuple[int, float]] = []


async def scale_tick(i: int) -> None:
    SCALE_RUNS.append((i, time.time()))


# failover: which process ran which fire, and when --------------------------------------


async def failover_tick() -> None:
    """Writes ``RUN <scheduled run time> <pid> <wall time>`` to stdout (one write)."""
    from quart_sched import current_run

    line = f"RUN {current_run.scheduled_run_time.timestamp():.6f} {os.getpid()} {time.time():.6f}"
    os.write(1, f"{line}\n".encode())
