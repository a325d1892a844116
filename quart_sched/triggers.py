"""A cron trigger that follows Vixie cron on the nights clocks change.

Every cron job quart_sched builds from the name ``"cron"`` (configuration, ``@task``,
``add_job``, ``modify_job``, the REST API) uses :class:`CronTrigger`. It takes exactly the
arguments of APScheduler 3's ``CronTrigger`` and gives the same fire times, except on the
nights a time zone's clocks change, where it does what Vixie cron (the crontab of most
Linux systems) does:

* A **fixed-time** job fires once per matching wall time, when the clock first reaches
  it: a daily 01:30 job in New York runs once on the night clocks fall back (at 01:30
  EDT, not again at 01:30 EST), and a daily 02:30 job runs once on the night they spring
  forward, at 03:00 EDT, the first instant after the skipped hour. Several skipped times
  (``hour=2, minute="0,30"``) give one run.
* A **wildcard** job fires at every real instant whose wall time matches: an hourly job
  runs in both 01:00 hours of the fall-back night, and nothing runs for times that never
  happened in the skipped hour.

A job is a wildcard job when its ``hour``, ``minute`` or ``second`` field starts with
``*`` (``"*"``, ``"*/15"``) -- Vixie cron's rule for the hour and minute, extended to
APScheduler's seconds. ``CronTrigger(minute=30)`` (hour ``*``) is one; ``hour=1,
minute=30``, ``hour="1-3"`` and ``minute="0,30"`` are fixed.

APScheduler's own trigger fires such jobs twice on fall-back nights and moves a skipped
02:30 to 03:30. An APScheduler ``CronTrigger`` *instance* given to ``add_job`` is kept
as it is; :meth:`CronTrigger.from_trigger` converts one.

The pickled state is APScheduler's (version 2), so jobs stored with either class load
with this module's import path, ``quart_sched.triggers:CronTrigger``, which stays.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from apscheduler.triggers.cron import CronTrigger as _APSchedulerCronTrigger
from apscheduler.util import datetime_ceil

__all__ = ["CronTrigger"]

_UTC = timezone.utc
_SECOND = timedelta(seconds=1)
#: Probe step when looking for a clock change; the tz database has no two changes closer
#: than about four days, so a day apart never misses one.
_PROBE = timedelta(days=1)
#: Loops here always advance; this only turns a bug into an error instead of a hang.
_MAX_STEPS = 100_000
_WILDCARD_FIELDS = ("hour", "minute", "second")


class CronTrigger(_APSchedulerCronTrigger):  # type: ignore[misc]
    """APScheduler's ``CronTrigger`` with Vixie cron's daylight-saving rule.

    Same arguments, fields and JSON as APScheduler's::

        from quart_sched.triggers import CronTrigger

        scheduler.add_job("backup", backup, trigger=CronTrigger(hour=1, minute=30))

    ``scheduler.add_job(..., trigger="cron", hour=1, minute=30)`` builds the same thing.
    """

    __slots__ = ()

    @classmethod
    def from_trigger(cls, trigger: _APSchedulerCronTrigger) -> CronTrigger:
        """This class with ``trigger``'s fields, dates, zone and jitter."""
        if not isinstance(trigger, _APSchedulerCronTrigger):
            raise TypeError(f"expected a CronTrigger, got {type(trigger).__name__}")
        converted: CronTrigger = cls.__new__(cls)
        converted.__setstate__(trigger.__getstate__())
        return converted

    @property
    def wildcard(self) -> bool:
        """True when the hour, minute or second field starts with ``*``: such a job fires
        at every real instant that matches; otherwise once per matching wall time."""
        return any(
            str(field).startswith("*") for field in self.fields if field.name in _WILDCARD_FIELDS
        )

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Right after the previous fire (even if that is in the past: the scheduler decides
        # about misfires), else now or the start date, as APScheduler's. All comparisons
        # are in UTC: aware datetimes sharing a tzinfo compare by wall time, ignoring fold.
        if previous_fire_time is not None:
            start = previous_fire_time.astimezone(_UTC) + timedelta(microseconds=1)
        else:
            start = now.astimezone(_UTC)
            if self.start_date is not None:
                start = max(start, self.start_date.astimezone(_UTC))
        end = self.end_date.astimezone(_UTC) if self.end_date is not None else None
        try:
            fire = self._next_fire(datetime_ceil(start), end)
        except OverflowError:  # the calendar ends at year 9999
            return None
        if fire is None or (end is not None and fire > end):
            return None
        fire = self._apply_jitter(fire, self.jitter, now)
        if end is not None:
            fire = min(fire, end)
        local: datetime = fire.astimezone(self.timezone)
        return local

    # the calendar -------------------------------------------------------------------

    def _next_fire(self, start: datetime, end: datetime | None) -> datetime | None:
        """The first fire instant (UTC) at or after ``start`` (UTC, whole seconds)."""
        limit = None
        if end is not None:  # no wall time later than this can be an instant before `end`
            limit = end.replace(tzinfo=None) + timedelta(days=2)
        if self.wildcard:
            return self._next_real(start, limit)
        return self._next_fixed(start, limit)

    def _next_fixed(self, start: datetime, limit: datetime | None) -> datetime | None:
        """Fixed-time rule: wall time ``w`` fires when the clock first reaches it."""
        tz = self.timezone
        local = start.astimezone(tz)
        wall = _naive(local)
        before = (start - _SECOND).astimezone(tz)
        if before.utcoffset() < local.utcoffset():  # type: ignore[operator]
            # `start` is the instant clocks jumped forward: the skipped wall times fire now.
            wall = _naive(before) + _SECOND
        elif local.fold:
            off0, off1 = _offsets(wall, tz)
            if off0 > off1:
                # Second pass over repeated wall times: all of them already fired. The
                # clock fell back at `fell`, showing `fell + off0` just before.
                fell = _first_with_offset(tz, _instant(wall, off0), start, off1)
                wall = max(wall, _naive_utc(fell) + off0)
        for _ in range(_MAX_STEPS):
            match = self._next_wall(wall, limit)
            if match is None:
                return None
            fire = _first_reached(match, tz)
            if fire >= start:
                return fire
            wall = match + _SECOND
        raise RuntimeError(f"{self!r}: no fire time found after {start}")  # pragma: no cover

    def _next_real(self, start: datetime, limit: datetime | None) -> datetime | None:
        """Wildcard rule: every instant whose wall time matches."""
        tz = self.timezone
        instant = start
        for _ in range(_MAX_STEPS):
            candidate = self._next_real_candidate(instant, limit)
            if candidate is None:
                return None
            # Wall times only increase up to the next fall-back; after it, earlier wall
            # times come again, so look again from there.
            fell = _next_fall_back(tz, instant, candidate)
            if fell is None:
                return candidate
            instant = fell
        raise RuntimeError(f"{self!r}: no fire time found after {start}")  # pragma: no cover

    def _next_real_candidate(self, start: datetime, limit: datetime | None) -> datetime | None:
        """The first instant at or after ``start`` of the first matching wall time at or
        after ``start``'s that has one."""
        tz = self.timezone
        wall = _naive(start.astimezone(tz))
        for _ in range(_MAX_STEPS):
            match = self._next_wall(wall, limit)
            if match is None:
                return None
            off0, off1 = _offsets(match, tz)
            if off0 < off1:  # skipped by the clock: never happened; go on after the gap
                jumped = _first_with_offset(tz, _instant(match, off1), _instant(match, off0), off1)
                wall = _naive(jumped.astimezone(tz))
                continue
            instants = [i for i in {_instant(match, off0), _instant(match, off1)} if i >= start]
            if instants:
                return min(instants)
            wall = match + _SECOND
        raise RuntimeError(f"{self!r}: no fire time found after {start}")  # pragma: no cover

    def _next_wall(self, wall: datetime, limit: datetime | None) -> datetime | None:
        """The first naive wall time at or after ``wall`` that the fields match.

        APScheduler's field walk, on naive datetimes so no time zone can loop it.
        """
        fieldnum = 0
        date = wall
        while 0 <= fieldnum < len(self.fields):
            field = self.fields[fieldnum]
            current = field.get_value(date)
            following = field.get_next_value(date)
            if following is None:
                date, fieldnum = self._increment_field_value(date, fieldnum - 1)
            elif following > current:
                if field.REAL:
                    date = self._set_naive(date, fieldnum, following)
                    fieldnum += 1
                else:
                    date, fieldnum = self._increment_field_value(date, fieldnum)
            else:
                fieldnum += 1
            if limit is not None and date > limit:
                return None
        return date if fieldnum >= 0 else None

    def _set_naive(self, date: datetime, fieldnum: int, value: int) -> datetime:
        values: dict[str, Any] = {}
        for i, field in enumerate(self.fields):
            if field.REAL:
                if i < fieldnum:
                    values[field.name] = field.get_value(date)
                elif i > fieldnum:
                    values[field.name] = field.get_min(date)
                else:
                    values[field.name] = value
        return datetime(**values)


# ------------------------------------------------------------------- wall-clock helpers


def _naive(local: datetime) -> datetime:
    return local.replace(tzinfo=None, fold=0)


def _naive_utc(instant: datetime) -> datetime:
    return instant.astimezone(_UTC).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=_UTC)


def _offsets(wall: datetime, tz: tzinfo) -> tuple[timedelta, timedelta]:
    """The UTC offsets PEP 495 gives ``wall`` with fold 0 and 1: equal for a wall time that
    happens once; first > second when it happens twice; first < second when it is skipped
    (fold 0 takes the offset from before the change, fold 1 the one after)."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first is not None and second is not None, f"{tz!r} gives no UTC offset"
    return first, second


def _offset_at(instant: datetime, tz: tzinfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _first_reached(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant the clock shows ``wall`` or, if it skips it, jumps past it."""
    off0, off1 = _offsets(wall, tz)
    if off0 >= off1:  # happens once, or twice (fold 0 is the first time)
        return _instant(wall, off0)
    return _first_with_offset(tz, _instant(wall, off1), _instant(wall, off0), off1)


def _first_with_offset(tz: tzinfo, low: datetime, high: datetime, offset: timedelta) -> datetime:
    """The first whole second in (``low``, ``high``] whose UTC offset is ``offset``, given
    that ``high``'s is and that the offset changes once in between."""
    lo, hi = 0, int((high - low).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(low + timedelta(seconds=mid), tz) == offset:
            hi = mid
        else:
            lo = mid
    return low + timedelta(seconds=hi)


def _next_fall_back(tz: tzinfo, start: datetime, end: datetime) -> datetime | None:
    """The first instant in (``start``, ``end``] at which clocks go back, if any."""
    if isinstance(tz, timezone):  # a fixed offset never changes
        return None
    here, offset = start, _offset_at(start, tz)
    while here < end:
        there = min(here + _PROBE, end)
        later = _offset_at(there, tz)
        if later < offset:
            return _first_with_offset(tz, here, there, later)
        here, offset = there, later
    return None
