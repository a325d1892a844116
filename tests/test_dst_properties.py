"""Property tests: quart_sched's CronTrigger follows Vixie cron's rule in every zone.

Random cron expressions, zones from the tz database (mostly ones with clock changes) and
dates from a ten-year span. The expected fire times come from an oracle written straight
from the rule, by enumerating wall times and asking zoneinfo which instants show them:

* fixed-time expressions (no ``*`` leading the hour, minute or second) fire once per
  matching wall time, when the clock first reaches it: the first pass of a repeated hour,
  the first instant after a skipped one;
* wildcard expressions fire at every real instant whose wall time matches.

On top: strictly increasing, never two fires at one instant, every fire shows a matching
wall time except the documented spring-forward shift, and every call returns within a
time limit (APScheduler has looped forever at DST boundaries: #980, #1021).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import cache
from types import FrameType
from zoneinfo import ZoneInfo, available_timezones

from apscheduler.triggers.cron import CronTrigger as APSchedulerCronTrigger
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from quart_sched.triggers import CronTrigger

UTC = timezone.utc
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
CALL_LIMIT = 2.0  # seconds any one get_next_fire_time may take
DOW = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

PROPERTY = settings(
    deadline=None,  # the per-call alarm below bounds the time instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


# --------------------------------------------------------------------------- zones


def _offset(instant: datetime, tz: tzinfo) -> timedelta:
    offset = instant.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


@cache
def transitions(name: str, first_year: int, years: int) -> tuple[datetime, ...]:
    """Instants (UTC, to the second) at which `name`'s UTC offset changes in the span."""
    tz = ZoneInfo(name)
    found = []
    here = datetime(first_year, 1, 1, tzinfo=UTC)
    end = datetime(first_year + years, 1, 1, tzinfo=UTC)
    offset = _offset(here, tz)
    while here < end:
        there = here + DAY
        later = _offset(there, tz)
        if later != offset:
            lo, hi = here, there
            while hi - lo > SECOND:
                mid = lo + (hi - lo) / 2
                mid = mid.replace(microsecond=0)
                if _offset(mid, tz) == later:
                    hi = mid
                else:
                    lo = mid
            found.append(hi)
        here, offset = there, later
    return tuple(found)


def _has_dst(name: str) -> bool:
    tz = ZoneInfo(name)
    return _offset(datetime(2025, 1, 15, tzinfo=UTC), tz) != _offset(
        datetime(2025, 7, 15, tzinfo=UTC), tz
    )


ALL_ZONES = sorted(available_timezones())
DST_ZONES = [name for name in ALL_ZONES if _has_dst(name)]
#: Odd ones: half-hour DST, negative DST, Ramadan pauses, a skipped day (2011), 2 h DST.
ODD_ZONES = [
    "Australia/Lord_Howe",
    "Europe/Dublin",
    "Africa/Casablanca",
    "Pacific/Apia",
    "Antarctica/Troll",
    "America/Santiago",
    "Asia/Gaza",
    "America/Havana",
]
zones = st.one_of(
    st.sampled_from(DST_ZONES), st.sampled_from(ODD_ZONES), st.sampled_from(ALL_ZONES)
)


# --------------------------------------------------------------------- expressions


def _field(low: int, high: int, *, star: bool = True) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    options = [
        value.map(str),
        st.tuples(value, value).map(lambda p: f"{min(p)},{max(p)}" if p[0] != p[1] else str(p[0])),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(value, value, st.integers(2, 7)).map(_stepped_range),
    ]
    if star:
        options += [st.just("*"), st.integers(2, min(high - low, 30)).map(lambda k: f"*/{k}")]
    return st.one_of(options)


def _stepped_range(parts: tuple[int, int, int]) -> str:
    low, high = min(parts[:2]), max(parts[:2])
    if high - low < 2:
        return f"{low}-{high}"
    return f"{low}-{high}/{min(parts[2], high - low)}"


def values_of(expr: str, low: int, high: int) -> set[int]:
    """The oracle's own reading of the expressions generated here (APScheduler's not used)."""
    out: set[int] = set()
    for part in expr.split(","):
        step = 1
        if "/" in part:
            part, raw_step = part.split("/")
            step = int(raw_step)
        if part == "*":
            first, last = low, high
        elif "-" in part:
            first, last = (int(x) for x in part.split("-"))
        else:
            first = last = int(part)
        out.update(range(first, last + 1, step))
    return out


@st.composite
def expressions(draw: st.DrawFn) -> dict[str, str]:
    expr = {
        "hour": draw(_field(0, 23)),
        "minute": draw(_field(0, 59)),
        # Few seconds, so a day has at most a few thousand matching wall times.
        "second": draw(st.sampled_from(["0", "0", "0", "30", "0,30", "*/30", "*/20"])),
    }
    if draw(st.integers(0, 4)) == 0:
        expr["day_of_week"] = draw(st.sampled_from(["mon-fri", "sat,sun", "sun", "tue,thu", "*"]))
    return expr


def is_wildcard(expr: dict[str, str]) -> bool:
    return any(expr[name].startswith("*") for name in ("hour", "minute", "second"))


# ------------------------------------------------------------------------ the oracle


def _naive(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def real_instants(wall: datetime, tz: tzinfo) -> list[datetime]:
    """Every instant at which the clock shows `wall` (none when it is skipped)."""
    out = set()
    for fold in (0, 1):
        offset = wall.replace(tzinfo=tz, fold=fold).utcoffset()
        assert offset is not None
        instant = (wall - offset).replace(tzinfo=UTC)
        if _naive(instant, tz) == wall:
            out.add(instant)
    return sorted(out)


def first_reached(wall: datetime, tz: tzinfo) -> datetime:
    """When the clock first shows `wall` or, skipping it, resumes after it."""
    found = real_instants(wall, tz)
    if found:
        return found[0]
    later = wall
    while not real_instants(later, tz):
        later += timedelta(minutes=1)
    while later - SECOND > wall and real_instants(later - SECOND, tz):
        later -= SECOND
    return real_instants(later, tz)[0]


def matching_walls(expr: dict[str, str], first: date, last: date) -> Iterator[datetime]:
    hours = sorted(values_of(expr["hour"], 0, 23))
    minutes = sorted(values_of(expr["minute"], 0, 59))
    seconds = sorted(values_of(expr["second"], 0, 59))
    days = {DOW.index(d) for d in _weekdays(expr.get("day_of_week", "*"))}
    day = first
    while day <= last:
        if day.weekday() in days:
            for h in hours:
                for m in minutes:
                    for s in seconds:
                        yield datetime(day.year, day.month, day.day, h, m, s)
        day += DAY


def _weekdays(expr: str) -> list[str]:
    if expr == "*":
        return list(DOW)
    out: list[str] = []
    for part in expr.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += DOW[DOW.index(a) : DOW.index(b) + 1]
        else:
            out.append(part)
    return out


def expected(expr: dict[str, str], tz: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """The rule's fire instants (UTC) in [start, end]."""
    first = _naive(start, tz).date() - DAY
    last = _naive(end, tz).date() + DAY
    out: set[datetime] = set()
    for wall in matching_walls(expr, first, last):
        if is_wildcard(expr):
            out.update(real_instants(wall, tz))
        else:
            out.add(first_reached(wall, tz))
    return sorted(t for t in out if start <= t <= end)


# -------------------------------------------------------------------- running ours


class CallTooSlow(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Turn a call that never returns (an infinite loop) into a failure."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise CallTooSlow(f"get_next_fire_time took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fire_times(trigger: object, start: datetime, end: datetime, cap: int) -> list[datetime]:
    """The trigger's fire times from `start` to `end` (at most `cap`), in UTC, each call
    under a time limit and each one later than the last."""
    out: list[datetime] = []
    previous = None
    while len(out) < cap:
        with time_limit(CALL_LIMIT):
            fire = trigger.get_next_fire_time(previous, previous or start)  # type: ignore[attr-defined]
        if fire is None:
            break
        assert fire.tzinfo is not None
        instant = fire.astimezone(UTC)
        assert not out or instant > out[-1], f"did not advance: {out[-1]} then {instant}"
        if instant > end:
            break
        out.append(instant)
        previous = fire
    return out


def around_transition(
    data: st.DataObject, name: str, expr: dict[str, str]
) -> tuple[datetime, datetime]:
    first_year = data.draw(st.integers(2000, 2030), label="first year")
    changes = transitions(name, first_year, 10)
    if changes:
        center = data.draw(st.sampled_from(changes), label="clock change")
        event("around a clock change")
    else:
        center = (
            datetime(first_year, 1, 1, tzinfo=UTC)
            + data.draw(st.integers(0, 3650), label="day") * DAY
        )
        event("zone without clock changes in the span")
    per_day = (
        len(values_of(expr["hour"], 0, 23))
        * len(values_of(expr["minute"], 0, 59))
        * len(values_of(expr["second"], 0, 59))
    )
    half = timedelta(hours=3) if per_day > 200 else timedelta(hours=50)
    shift = timedelta(seconds=data.draw(st.integers(-3600, 3600), label="shift"))
    return center + shift - half, center + shift + half


# ------------------------------------------------------------------------ properties


@settings(PROPERTY, max_examples=120)
@given(name=zones, expr=expressions(), data=st.data())
def test_fire_times_follow_the_rule_around_clock_changes(
    name: str, expr: dict[str, str], data: st.DataObject
) -> None:
    tz = ZoneInfo(name)
    start, end = around_transition(data, name, expr)
    trigger = CronTrigger(timezone=tz, **expr)
    assert trigger.wildcard == is_wildcard(expr)
    event("wildcard" if trigger.wildcard else "fixed")

    got = fire_times(trigger, start, end, cap=5000)
    want = expected(expr, tz, start, end)
    assert got == want

    assert len(set(got)) == len(got)  # never two fires at one instant
    hours = values_of(expr["hour"], 0, 23)
    minutes = values_of(expr["minute"], 0, 59)
    seconds = values_of(expr["second"], 0, 59)
    for fire in got:
        wall = _naive(fire, tz)
        shows_match = wall.hour in hours and wall.minute in minutes and wall.second in seconds
        if not shows_match:
            # Only allowed: a fixed time the clock skipped, run when it resumes.
            assert not trigger.wildcard
            before = _naive(fire - SECOND, tz)
            assert before + SECOND < wall, f"{fire} shows {wall}, which does not match"
            event("spring-forward shift")


@settings(PROPERTY, max_examples=8)
@given(
    name=st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(ODD_ZONES)),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    days=st.sampled_from(["*", "mon-fri", "sun", "sat,sun"]),
    first_year=st.integers(2000, 2030),
)
def test_fixed_time_fires_once_per_matching_date_for_ten_years(
    name: str, hour: int, minute: int, days: str, first_year: int
) -> None:
    tz = ZoneInfo(name)
    trigger = CronTrigger(hour=hour, minute=minute, day_of_week=days, timezone=tz)
    start = datetime(first_year, 1, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(first_year + 10, 1, 1, tzinfo=tz).astimezone(UTC) - SECOND
    got = fire_times(trigger, start, end, cap=4000)

    expr = {"hour": str(hour), "minute": str(minute), "second": "0", "day_of_week": days}
    assert got == expected(expr, tz, start, end)

    weekdays = {DOW.index(d) for d in _weekdays(days)}
    dates = [d for d in _dates(first_year, first_year + 10) if d.weekday() in weekdays]
    per_date = Counter(_naive(fire, tz).date() for fire in got)
    # Once per matching local date. Only when the clock skipped a whole date (Apia,
    # 2011-12-30) does its run move to the next date, which then has two -- or one, if
    # both are the same instant (no two runs at one instant).
    skipped = [d for d in dates if d not in per_date]
    assert len(skipped) <= 1, skipped
    assert len(got) in (len(dates), len(dates) - len(skipped))
    for day, count in per_date.items():
        assert day in dates or day - DAY in skipped
        assert count == 1 or (count == 2 and day - DAY in skipped)
    event(f"{len(skipped)} skipped date(s)")


def _dates(first_year: int, end_year: int) -> list[date]:
    day, out = date(first_year, 1, 1), []
    while day.year < end_year:
        out.append(day)
        day += DAY
    return out


@settings(PROPERTY, max_examples=60)
@given(
    name=st.sampled_from(["UTC", "Asia/Tokyo", "Asia/Kolkata", "America/Phoenix"]),
    expr=expressions(),
    day=st.sampled_from([None, "1", "15", "last", "last fri", "1-7"]),
    month=st.sampled_from([None, "*", "2", "1-3", "*/4"]),
    start=st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1)),
    jump=st.integers(0, 400),
)
def test_same_as_apscheduler_where_clocks_do_not_change(
    name: str,
    expr: dict[str, str],
    day: str | None,
    month: str | None,
    start: datetime,
    jump: int,
) -> None:
    """Away from clock changes nothing differs: start/end dates and the day fields too."""
    tz = ZoneInfo(name)
    args: dict[str, object] = dict(expr, day=day, month=month, timezone=tz)
    args["start_date"] = start.replace(tzinfo=tz)
    args["end_date"] = start.replace(tzinfo=tz) + timedelta(days=jump)
    ours = fire_times(CronTrigger(**args), start.replace(tzinfo=UTC), _END, cap=60)
    theirs = fire_times(APSchedulerCronTrigger(**args), start.replace(tzinfo=UTC), _END, cap=60)
    assert ours == theirs


_END = datetime(9000, 1, 1, tzinfo=UTC)


def test_transition_finder_sees_new_york() -> None:
    changes = transitions("America/New_York", 2026, 1)
    assert changes == (
        datetime(2026, 3, 8, 7, tzinfo=UTC),
        datetime(2026, 11, 1, 6, tzinfo=UTC),
    )


def test_odd_zones_change_clocks_in_the_span() -> None:
    assert all(transitions(name, 2000, 40) for name in ODD_ZONES)
