"""The private parts of APScheduler, Quart and aiosqlite that quart_sched relies on are there.

quart_sched subclasses APScheduler 3's scheduler and executor and calls some of their
private methods; it pushes app contexts through Quart's private context variable. A new
release may drop or reshape any of these without notice. This test names each one, so an
upgrade breaks a test with a list of what is gone instead of breaking a user's app.

When the package starts using another private name of a dependency, add it to
``INTERNALS``: the second test finds private names used in ``quart_sched/`` that are not
listed.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite
from apscheduler.executors.base import BaseExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from quart import Quart, current_app

PACKAGE = Path(__file__).resolve().parent.parent / "quart_sched"


def _params(func: Callable[..., Any]) -> list[str]:
    """Parameter names, ``self`` left out."""
    return [name for name in inspect.signature(func).parameters if name != "self"]


def _method(owner: type, name: str, params: list[str]) -> Callable[[], str | None]:
    def check() -> str | None:
        func = getattr(owner, name, None)
        if not callable(func):
            return f"{owner.__qualname__}.{name} is gone"
        got = _params(func)
        if got != params:
            return (
                f"{owner.__qualname__}.{name} takes ({', '.join(got)}), not ({', '.join(params)})"
            )
        return None

    return check


def _attribute(
    owner: Callable[[], Any], where: str, name: str, kind: type | tuple[type, ...]
) -> Callable[[], str | None]:
    def check() -> str | None:
        obj = owner()
        if not hasattr(obj, name):
            return f"{where}.{name} is gone"
        value = getattr(obj, name)
        if not isinstance(value, kind):
            return f"{where}.{name} is a {type(value).__name__}, not {kind}"
        return None

    return check


_RLOCK = type(threading.RLock())


def _started_executor() -> BaseExecutor:
    """A ThreadPoolExecutor started by a real scheduler: what start() gives an executor."""
    return _STARTED["executor"]  # type: ignore[no-any-return]


_STARTED: dict[str, Any] = {}


def _job_slots() -> str | None:
    needed = {"_jobstore_alias", "_scheduler", "id", "trigger", "next_run_time"}
    missing = needed - set(getattr(Job, "__slots__", ()))
    # _copy_job copies a job slot by slot: Job must keep declaring them.
    return f"Job.__slots__ lacks {sorted(missing)}" if missing else None


def _cv_app() -> str | None:
    try:
        from quart.globals import _cv_app as cv_app
    except ImportError:
        return "quart.globals._cv_app is gone"
    if not isinstance(cv_app, contextvars.ContextVar):
        return f"quart.globals._cv_app is a {type(cv_app).__name__}, not a ContextVar"
    # Setting it to an app context must be what makes current_app work (see
    # _scheduler._QuietAppContext).
    app = Quart("internals_check")
    token = cv_app.set(app.app_context())
    try:
        if current_app.name != app.name:  # pragma: no cover - only on an incompatible Quart
            return "quart.globals._cv_app set to an app context does not make current_app"
    finally:
        cv_app.reset(token)
    return None


def _aiosqlite_thread() -> str | None:
    connection = aiosqlite.connect(":memory:")
    thread = getattr(connection, "_thread", None)
    if not isinstance(thread, threading.Thread):
        # _history marks it a daemon so a connection left waiting cannot block exit.
        return "aiosqlite.Connection._thread is not the connection's worker Thread"
    if not callable(getattr(connection, "stop", None)):
        return "aiosqlite.Connection.stop is gone"
    return None


def _pool_size() -> str | None:
    executor = ThreadPoolExecutor(3)
    pool = getattr(executor, "_pool", None)
    if getattr(pool, "_max_workers", None) != 3:
        # _upgrade_executor keeps a configured thread pool's size through it.
        return "ThreadPoolExecutor(3)._pool._max_workers is not 3"
    return None


def _run_times() -> str | None:
    job = Job.__new__(Job)  # _get_run_times only needs the trigger and next_run_time
    from apscheduler.triggers.interval import IntervalTrigger

    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    job.trigger = IntervalTrigger(seconds=10, start_date=start)
    job.next_run_time = start
    times = job._get_run_times(datetime(2030, 1, 1, 0, 0, 25, tzinfo=timezone.utc))
    if [t.second for t in times] != [0, 10, 20]:
        return f"Job._get_run_times returned {times!r}, not the due fire times"
    return None


def _started_store() -> MemoryJobStore:
    return _STARTED["store"]  # type: ignore[no-any-return]


def _job_state() -> str | None:
    # _unloadable rebuilds a job from the pickled state of a job whose code is gone.
    from apscheduler.triggers.date import DateTrigger

    job = Job(
        _scheduler(),
        id="x",
        func="os:getcwd",
        trigger=DateTrigger(),
        executor="d",
        args=(),
        kwargs={},
        name="x",
        misfire_grace_time=1,
        coalesce=True,
        max_instances=1,
        next_run_time=None,
    )
    needed = {
        "id",
        "func",
        "trigger",
        "executor",
        "args",
        "kwargs",
        "name",
        "misfire_grace_time",
        "coalesce",
        "max_instances",
        "next_run_time",
    }
    missing = needed - set(job.__getstate__())
    return f"Job.__getstate__() lacks {sorted(missing)}" if missing else None


def _modify() -> str | None:
    func = getattr(Job, "_modify", None)
    if func is None:
        return "Job._modify is gone"
    kinds = [p.kind for p in inspect.signature(func).parameters.values()][1:]
    if kinds != [inspect.Parameter.VAR_KEYWORD]:
        return "Job._modify no longer takes **changes"
    return None


def _scheduler() -> AsyncIOScheduler:
    return AsyncIOScheduler()


def _memory_store_layout() -> str | None:
    """DueWrites rewrites a MemoryJobStore's head: ``_jobs`` must be its list of
    ``(job, timestamp)`` sorted by (timestamp, id), ``_jobs_index`` its id -> entry."""
    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    store = MemoryJobStore()
    store.start(scheduler, "default")
    late = datetime(2031, 1, 1, tzinfo=timezone.utc)
    early = datetime(2030, 1, 1, tzinfo=timezone.utc)
    for job_id, when in (("b", late), ("a", late), ("c", early)):
        job = Job(scheduler, id=job_id, func=print, args=(), kwargs={}, next_run_time=when)
        job._jobstore_alias = "default"
        store.add_job(job)
    jobs = getattr(store, "_jobs", None)
    index = getattr(store, "_jobs_index", None)
    if not isinstance(jobs, list) or not isinstance(index, dict):
        return "MemoryJobStore no longer keeps _jobs (list) and _jobs_index (dict)"
    if [(job.id, stamp) for job, stamp in jobs] != [
        ("c", early.timestamp()),
        ("a", late.timestamp()),
        ("b", late.timestamp()),
    ]:
        return f"MemoryJobStore._jobs is not sorted (timestamp, id) entries: {jobs!r}"
    if {key: entry[0].id for key, entry in index.items()} != {"a": "a", "b": "b", "c": "c"}:
        return f"MemoryJobStore._jobs_index is not id -> (job, timestamp): {index!r}"
    return None


#: name -> check returning None when the internal is there with the shape the code needs.
INTERNALS: dict[str, Callable[[], str | None]] = {
    # BaseScheduler / AsyncIOScheduler methods overridden or called by QuartScheduler
    "_process_jobs": _method(BaseScheduler, "_process_jobs", []),
    "_real_add_job": _method(
        BaseScheduler, "_real_add_job", ["job", "jobstore_alias", "replace_existing"]
    ),
    "_create_trigger": _method(BaseScheduler, "_create_trigger", ["trigger", "trigger_args"]),
    # quart_sched.triggers.CronTrigger walks APScheduler's cron fields.
    "_increment_field_value": _method(
        CronTrigger, "_increment_field_value", ["dateval", "fieldnum"]
    ),
    "_apply_jitter": _method(BaseTrigger, "_apply_jitter", ["next_fire_time", "jitter", "now"]),
    "_lookup_executor": _method(BaseScheduler, "_lookup_executor", ["alias"]),
    "_lookup_jobstore": _method(BaseScheduler, "_lookup_jobstore", ["alias"]),
    "_lookup_job": _method(BaseScheduler, "_lookup_job", ["job_id", "jobstore_alias"]),
    "_dispatch_event": _method(BaseScheduler, "_dispatch_event", ["event"]),
    "_stop_timer": _method(AsyncIOScheduler, "_stop_timer", []),
    "_start_timer": _method(AsyncIOScheduler, "_start_timer", ["wait_seconds"]),
    "_create_plugin_instance": _method(
        BaseScheduler, "_create_plugin_instance", ["type_", "alias", "constructor_kwargs"]
    ),
    "_create_default_executor": _method(AsyncIOScheduler, "_create_default_executor", []),
    # scheduler state
    "_eventloop": _attribute(_scheduler, "AsyncIOScheduler()", "_eventloop", type(None)),
    "_executors": _attribute(_scheduler, "AsyncIOScheduler()", "_executors", dict),
    "_jobstores": _attribute(_scheduler, "AsyncIOScheduler()", "_jobstores", dict),
    "_executors_lock": _attribute(_scheduler, "AsyncIOScheduler()", "_executors_lock", _RLOCK),
    # re-entrant: the API adds jobs from worker threads while holding it
    "_jobstores_lock": _attribute(_scheduler, "AsyncIOScheduler()", "_jobstores_lock", _RLOCK),
    "_pending_jobs": _attribute(_scheduler, "AsyncIOScheduler()", "_pending_jobs", list),
    "_job_defaults": _attribute(_scheduler, "AsyncIOScheduler()", "_job_defaults", dict),
    "_logger": _attribute(_scheduler, "AsyncIOScheduler()", "_logger", object),
    # Job
    "_get_run_times": _run_times,
    "_modify": _modify,
    "_jobstore_alias": _job_slots,
    # executors
    "_do_submit_job": _method(BaseExecutor, "_do_submit_job", ["job", "run_times"]),
    "_run_job_success": _method(BaseExecutor, "_run_job_success", ["job_id", "events"]),
    "_instances": _attribute(_started_executor, "started executor", "_instances", dict),
    "_lock": _attribute(_started_executor, "started executor", "_lock", _RLOCK),
    "_scheduler": _attribute(_started_executor, "started executor", "_scheduler", BaseScheduler),
    "_pool": _pool_size,
    "_max_workers": _pool_size,
    # job stores: a started store knows its scheduler and alias; a pickling store rebuilds
    # each job through _reconstitute_job, which keep_unloadable wraps
    "_alias": _attribute(_started_store, "started MemoryJobStore", "_alias", str),
    "_reconstitute_job": _method(SQLAlchemyJobStore, "_reconstitute_job", ["job_state"]),
    # the memory store's sorted list and index, which DueWrites rewrites at once
    "_jobs": _memory_store_layout,
    "_jobs_index": _memory_store_layout,
    "Job.__getstate__": _job_state,
    # Quart and aiosqlite
    "_cv_app": _cv_app,
    "_thread": _aiosqlite_thread,
}


async def test_every_internal_the_package_uses_is_there() -> None:
    scheduler = AsyncIOScheduler(executors={"default": ThreadPoolExecutor(2)})
    scheduler.start()
    try:
        _STARTED["executor"] = scheduler._lookup_executor("default")
        _STARTED["store"] = scheduler._lookup_jobstore("default")
        await asyncio.sleep(0)
        problems = []
        for name, check in INTERNALS.items():
            try:
                problem = check()
            except Exception as exc:
                problem = f"{name}: checking it raised {type(exc).__name__}: {exc}"
            if problem:
                problems.append(problem)
    finally:
        scheduler.shutdown(wait=False)
        _STARTED.clear()
    assert not problems, "internals quart_sched relies on changed:\n  " + "\n  ".join(problems)


def _names_in_package() -> tuple[set[str], set[str]]:
    """Private attribute names the package reads, and those it defines itself.

    Assigning ``self._x`` or ``cls._x`` defines a name; assigning ``obj._x`` on another
    object (a job, a job store) uses that object's. ``getattr(obj, "_x")`` is a use.
    """
    used: set[str] = set()
    defined: set[str] = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if node.attr.startswith("__"):
                    continue
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if isinstance(node.ctx, ast.Store) and own:
                    defined.add(node.attr)
                else:
                    used.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                used.update(a.name for a in node.names if a.name.startswith("_"))
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")
                and not str(node.args[1].value).startswith("__")
            ):
                used.add(str(node.args[1].value))
    return used, defined


def test_every_private_name_the_package_borrows_is_checked() -> None:
    from quart_sched._scheduler import QuartExecutor, QuartScheduler

    used, defined = _names_in_package()
    borrowed = used - defined
    # Methods we override must keep the name the base class calls them by.
    for cls in (QuartScheduler, QuartExecutor):
        for name in vars(cls):
            overrides = any(name in vars(base) for base in cls.__mro__[1:-1])
            if overrides and name.startswith("_") and not name.startswith(("__", "_abc")):
                borrowed.add(name)
    unchecked = sorted(borrowed - set(INTERNALS))
    assert not unchecked, (
        f"quart_sched uses private names of its dependencies that tests/test_internals.py "
        f"does not check: {unchecked}. Add each to INTERNALS."
    )
