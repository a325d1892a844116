"""APScheduler 3 adapted to a Quart app's serving loop.

This package is the only code that touches APScheduler's private attributes. Its units,
one module each:

* ``scheduler``: :class:`QuartScheduler`, an ``AsyncIOScheduler`` that binds to the loop
  it is started on, changes ``state`` before ``shutdown()`` returns, drains running jobs
  before it closes its job stores, and keeps paused jobs paused when they are re-declared
  at start-up (configuration, jobs, start and stop);
* ``wakeup``: the wake-up passes: take the due fires from each store (off the loop for a
  persistent one), record them, ask the fire gate (``quart_sched._gate``), submit runs;
* ``executor``: :class:`QuartExecutor`, which runs coroutine functions on the loop and
  plain functions in a bounded thread pool, each run in a fresh app context;
* ``workers``: that thread pool, handing finished runs back to the loop in batches;
* ``reporting``: every outcome to the blinker signals and the run history;
* ``unloadable``: stored jobs whose code cannot be loaded are kept, not deleted.

Store access itself (a thread per persistent store) is ``quart_sched._stores``.
"""

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, STATE_STOPPED
from apscheduler.util import undefined

from .executor import QuartExecutor
from .scheduler import QuartScheduler
from .unloadable import UnloadableJob, load_error

__all__ = [
    "STATE_PAUSED",
    "STATE_RUNNING",
    "STATE_STOPPED",
    "QuartExecutor",
    "QuartScheduler",
    "UnloadableJob",
    "load_error",
    "undefined",
]
