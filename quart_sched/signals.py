"""Blinker signals sent for every job run, with the Quart app as sender.

Receivers may be plain or ``async`` functions::

    from quart_sched.signals import job_failed

    @job_failed.connect
    async def alert(app, job_id, scheduled_run_time, exception, traceback, **extra):
        ...

Every signal passes ``job_id`` and ``scheduled_run_time``; ``job_executed`` adds
``retval``; ``job_failed`` adds ``exception`` and ``traceback`` (a string). Job arguments
are never passed, so a receiver that logs what it gets leaks no secrets.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A run finished without raising.
job_executed = _signals.signal("quart_sched.job-executed")
#: A run raised an exception.
job_failed = _signals.signal("quart_sched.job-failed")
#: A run was not started because it was later than ``misfire_grace_time``.
job_missed = _signals.signal("quart_sched.job-missed")
#: A run was not started because ``max_instances`` runs of the job were already running.
job_skipped = _signals.signal("quart_sched.job-skipped")
#: A run was still going when the scheduler shut down and was cancelled.
job_interrupted = _signals.signal("quart_sched.job-interrupted")
#: Any run ended, whatever the outcome, and was recorded in the run history: ``run`` is
#: the record as the API shows it (only sent while the history is on).
run_finished = _signals.signal("quart_sched.run-finished")
#: This process became the leader: it runs the jobs now. ``leader`` is the lease (host,
#: pid, since, epoch); sent with SCHEDULER_COORDINATION on.
became_leader = _signals.signal("quart_sched.became-leader")
#: This process no longer leads (stopped, or another process took over); ``leader`` is the
#: lease it held.
lost_leadership = _signals.signal("quart_sched.lost-leadership")

__all__ = [
    "became_leader",
    "job_executed",
    "job_failed",
    "job_interrupted",
    "job_missed",
    "job_skipped",
    "lost_leadership",
    "run_finished",
]
