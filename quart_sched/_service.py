"""The scheduler as a service: what the REST API, the dashboard and the CLI all do.

Every operation here is async, takes plain values (a request's JSON body, a job id) and
returns plain values (the job JSON), never an HTTP request or response: the REST handlers
(``api.py``) translate HTTP to these calls and back, and the CLI calls the same ones. The
rules of the API live here once: the job JSON, the validation of a job body and of its
trigger (never-firing, faster than ``SCHEDULER_API_MIN_INTERVAL``, uncomputable), the
allowlist check before any import, and job-store calls kept off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.job import Job

from . import _jobs, _json
from ._describe import describe_trigger
from ._scheduler import load_error
from ._stores import store_error
from .errors import (
    ConflictingIdError,
    HistoryUnavailableError,
    JobLookupError,
    QuartSchedError,
    SchedulerNotRunningError,
    ValidationError,
)

if TYPE_CHECKING:
    from ._extension import APScheduler

T = TypeVar("T")

#: The keys of a job's ``last_run`` summary in the job JSON.
LAST_RUN_KEYS = ("run_id", "outcome", "started_at", "finished_at", "duration", "error")
NOT_RUNNING = "the scheduler is not running: POST /start first"
#: Fire times probed to find how often a trigger fires (cron gaps repeat within a few).
FIRE_PROBES = 20


class SchedulerService:
    """The operations behind the REST API, the dashboard and the CLI, for one extension."""

    def __init__(self, ext: APScheduler) -> None:
        self._ext = ext

    # job-store access ------------------------------------------------------------------

    async def offload(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call a scheduler method without blocking the loop on job-store I/O.

        Runs it directly when every job store is in memory, in a worker thread
        otherwise. A store that cannot be reached raises
        :class:`JobStoreUnavailableError`.
        """
        try:
            if self._ext.scheduler.memory_only:
                return func(*args, **kwargs)
            return await asyncio.to_thread(func, *args, **kwargs)
        except (QuartSchedError, LookupError, ConflictingIdError, ValueError, TypeError):
            raise
        except Exception as exc:
            error = store_error(exc)
            if error is exc:
                raise
            raise error from exc

    # job JSON --------------------------------------------------------------------------

    async def jobs_to_dicts(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Jobs as ``GET /jobs`` lists them: :meth:`job_to_dict` and ``last_run``, a summary
        of each job's latest recorded run (null if none, or if history is unavailable)."""
        data = [self.job_to_dict(job) for job in jobs]
        last: dict[str, dict[str, Any]] = {}
        if self._ext.history is not None and data:
            # Unavailable history: the jobs are still worth showing; the runs say why.
            with contextlib.suppress(HistoryUnavailableError):
                last = await self._ext.get_last_runs([item["id"] for item in data])
        for item in data:
            run = last.get(item["id"])
            item["last_run"] = None if run is None else {key: run[key] for key in LAST_RUN_KEYS}
        return data

    def job_to_dict(self, job: Job) -> dict[str, Any]:
        """A job as the REST API shows it (Flask-APScheduler's keys and order)."""
        data = _json.job_to_dict(
            job, self._ext.scheduler.job_defaults, datetime.now(self._ext.scheduler.timezone)
        )
        data["running_instances"] = self._ext.scheduler.running_instances(job.id)
        data["trigger_description"] = describe_trigger(job.trigger)
        data["load_error"] = load_error(job)
        return data

    def next_run_times(self, job: Job, n: int, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` fire times of ``job``'s trigger, in the trigger's time zone; a
        paused job's are those it would have if resumed now.

        With ``after``, the fire times after that instant instead (a naive ``after`` is in
        the scheduler's time zone), e.g. to check a coming DST night::

            scheduler.next_run_times(job, 3, after=datetime(2026, 10, 31, 12, 0))
        """
        now = datetime.now(self._ext.scheduler.timezone)
        times: list[datetime] = []
        previous = None
        try:
            if after is None:
                scheduled = getattr(job, "next_run_time", None)  # a pending job has none yet
                current = scheduled or job.trigger.get_next_fire_time(None, now)
            else:
                if after.tzinfo is None:
                    after = after.replace(tzinfo=self._ext.scheduler.timezone)
                # Strictly after it; in UTC, since wall-clock arithmetic ignores DST.
                start = after.astimezone(timezone.utc) + timedelta(microseconds=1)
                current = job.trigger.get_next_fire_time(None, start)
        except Exception:  # a trigger APScheduler cannot compute (a date past 9999)
            return times
        while current is not None and len(times) < n:
            times.append(current)
            previous = current
            try:
                current = job.trigger.get_next_fire_time(previous, previous)
            except Exception:  # the calendar ends at year 9999; custom triggers may raise
                break
            # In UTC: datetimes sharing a tzinfo compare by wall time, and an hour repeated
            # at the end of DST would look like going backwards.
            if current is not None and _utc(current) <= _utc(previous):
                break
        return times

    # jobs from a request -----------------------------------------------------------------

    async def add_job(self, body: Any) -> dict[str, Any]:
        """Add the job a ``POST /jobs`` body describes; its JSON."""
        ext = self._ext
        spec = _json.parse_job_body(body, tz=ext.scheduler.timezone)
        self.check_fires(spec)
        ref = spec["func"]
        # The resolved function, never the client's string: APScheduler's ref_to_obj would
        # import a submodule the string names.
        spec["func"] = await ext.resolve_api_function(ref)
        await ext.scheduler.refuse_standby_write(spec.get("jobstore"))
        try:
            job = await self.offload(ext.add_job, **spec)
        except ConflictingIdError:
            raise ConflictingIdError(spec["id"]) from None  # the store's may not name it
        except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
            raise _import_error(exc, ref) from None
        return (await self.jobs_to_dicts([job]))[0]

    async def modify_job(self, job_id: str, body: Any) -> dict[str, Any]:
        """Apply a ``PATCH /jobs/<id>`` body; the job as the write left it (not read again:
        a date job due now may have run and gone by then, and a write that took effect
        must not look like a 404)."""
        ext = self._ext
        changes = _json.parse_job_body(
            body, tz=ext.scheduler.timezone, partial=True, url_id=job_id
        )
        changes.pop("id", None)
        self.check_fires(changes)
        ref = changes.get("func")
        if ref is not None:
            changes["func"] = await ext.resolve_api_function(ref)
        if not changes:
            return await self.get_job(job_id)
        await ext.scheduler.refuse_standby_write(None)
        try:
            job = await self.offload(ext.modify_job, job_id, **changes)
        except (LookupError, ValueError, TypeError, ArithmeticError) as exc:
            if isinstance(exc, (JobLookupError, ConflictingIdError)):
                raise
            raise _import_error(exc, ref) from None
        return (await self.jobs_to_dicts([job]))[0]

    async def find_job(self, job_id: str) -> Job:
        """The job with this id; :class:`JobLookupError` if there is none."""
        job = await self.offload(self._ext.get_job, job_id)
        if job is None:
            raise JobLookupError(job_id)
        return job

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return (await self.jobs_to_dicts([await self.find_job(job_id)]))[0]

    async def get_jobs(self) -> list[dict[str, Any]]:
        return await self.jobs_to_dicts(await self.offload(self._ext.get_jobs))

    async def remove_job(self, job_id: str) -> None:
        await self._ext.scheduler.refuse_standby_write(None)
        await self.offload(self._ext.remove_job, job_id)

    async def pause_job(self, job_id: str) -> dict[str, Any]:
        await self._ext.scheduler.refuse_standby_write(None)
        job = await self.offload(self._ext.pause_job, job_id)
        return (await self.jobs_to_dicts([job]))[0]

    async def resume_job(self, job_id: str) -> dict[str, Any] | None:
        """The resumed job's JSON; None when its schedule had ended and resuming removed it
        (Flask-APScheduler's ``null``)."""
        await self._ext.scheduler.refuse_standby_write(None)
        job = await self.offload(self._ext.resume_job, job_id)
        return None if job is None else (await self.jobs_to_dicts([job]))[0]

    async def start_run(self, job_id: str) -> tuple[Job, asyncio.Future[Any]]:
        """Start a run of the job now (a manual run, not a scheduled fire)."""
        ext = self._ext
        if not ext.running:
            # Asked before the lookup: once shut down, APScheduler looks jobs up among the
            # pending ones only, so a job of a persistent store would seem not to exist.
            raise ValidationError("state", NOT_RUNNING)
        job = await self.find_job(job_id)
        try:
            return job, ext.submit_run(job)
        except SchedulerNotRunningError:
            raise ValidationError("state", NOT_RUNNING) from None

    # triggers ----------------------------------------------------------------------------

    def check_fires(self, spec: dict[str, Any]) -> None:
        """Refuse a trigger that never fires (``day: 31, month: 2``, an end in the past), one
        that fires more often than ``SCHEDULER_API_MIN_INTERVAL``, and one APScheduler
        cannot compute: whatever building or probing it raises is the client's input at fault."""
        if "trigger" not in spec:
            return
        trigger_name, trigger_args = _jobs.pop_trigger(dict(spec))
        try:
            trigger = self._ext.scheduler.make_trigger(trigger_name, trigger_args)
            first = trigger.get_next_fire_time(None, datetime.now(self._ext.scheduler.timezone))
        except Exception as exc:  # e.g. CronTrigger's IndexError for a start_date in 9999
            raise _uncomputable(trigger_args, exc) from None
        if first is None:
            raise ValidationError(
                "trigger", "this trigger never fires: check its fields and dates"
            )
        defaults = self._ext.scheduler.job_defaults
        grace = spec.get("misfire_grace_time", defaults["misfire_grace_time"])
        if trigger_name == "date" and grace is not None:
            late = datetime.now(timezone.utc) - first
            if late.total_seconds() > grace:
                raise ValidationError(
                    "run_date",
                    f"run_date is {late} in the past, beyond misfire_grace_time ({grace} s): "
                    "the run would be dropped as missed",
                )
        if trigger_name != "date":
            self._check_min_interval(trigger_name, trigger_args, trigger, first)

    def _check_min_interval(
        self, name: str, args: dict[str, Any], trigger: Any, first: datetime
    ) -> None:
        floor = self._ext.api_min_interval
        if floor <= 0:
            return
        if name == "interval":
            # The client's numbers, not the trigger's: APScheduler turns 1e-300 s into 1 s.
            gap = _json.interval_seconds(args)
            fields = [unit for unit in _json.INTERVAL_UNITS if unit in args]
        else:
            gap = math.inf
            previous = first
            try:
                for _ in range(FIRE_PROBES):
                    try:
                        following = trigger.get_next_fire_time(previous, previous)
                    except OverflowError:  # the calendar ends at year 9999: no later fire
                        break
                    if following is None or following <= previous:
                        break
                    gap = min(gap, (following - previous).total_seconds())
                    previous = following
            except Exception as exc:
                raise _uncomputable(args, exc) from None
            fields = [field for field in _json.CRON_FIELDS if field in args]
        if gap < floor:
            field = fields[-1] if fields else "trigger"  # the finest unit given
            raise ValidationError(
                field,
                f"{field}: this trigger would fire every {gap:g} s, more often than the API "
                f"allows (SCHEDULER_API_MIN_INTERVAL = {floor:g} s)",
            )


def _uncomputable(trigger_args: dict[str, Any], exc: Exception) -> ValidationError:
    dates = [name for name in _jobs.DATE_FIELDS if name in trigger_args]
    hint = f"check {' and '.join(dates)}" if dates else "check its fields"
    return ValidationError(
        "trigger",
        f"trigger: when this trigger fires cannot be computed ({type(exc).__name__}: {exc}); "
        f"{hint}",
    )


def _import_error(exc: Exception, func: str | None) -> ValidationError:
    if func is not None and isinstance(exc, LookupError):
        return ValidationError("func", f"func {func!r} cannot be imported: {exc}")
    if isinstance(exc, ValueError) and "argument" in str(exc):  # APScheduler's signature check
        return ValidationError("args", f"args and kwargs do not fit the function: {exc}")
    return ValidationError("body", str(exc))


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)
