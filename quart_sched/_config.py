"""The configuration keys, their defaults, and their parsing into one frozen object.

Every ``SCHEDULER_*`` key is listed in :data:`KEYS`; ``docs/reference/config.md`` is the
same table for users. The app config is read once, in ``init_app``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from ._coordination import check_setting
from ._urls import is_postgresql_url, url_scheme
from .errors import ConfigurationError

DEFAULT_API_PREFIX = "/scheduler"
DEFAULT_ENDPOINT_PREFIX = "scheduler."
DEFAULT_SHUTDOWN_TIMEOUT = 20.0
DEFAULT_JOBSTORE_RETRY_INTERVAL = 10.0
DEFAULT_API_RUN_TIMEOUT = 30.0
DEFAULT_API_MIN_INTERVAL = 1.0
DEFAULT_CLAIM_AHEAD = 0.05
DEFAULT_HISTORY_FILE = "quart_sched.sqlite"
DEFAULT_HISTORY_KEEP_RUNS = 1000
DEFAULT_HISTORY_KEEP_DAYS = 30.0

#: key -> (type shown in the docs, default, meaning)
KEYS: dict[str, tuple[str, str, str]] = {
    "SCHEDULER_JOBS": ("list[dict]", "[]", "Jobs to add at init_app (wins over JOBS)."),
    "JOBS": ("list[dict]", "[]", "Flask-APScheduler's older name for SCHEDULER_JOBS."),
    "SCHEDULER_JOBSTORES": ("dict", "memory", "APScheduler job stores by alias."),
    "SCHEDULER_EXECUTORS": ("dict", "threadpool of 10", "APScheduler executors by alias."),
    "SCHEDULER_JOB_DEFAULTS": ("dict", "{}", "coalesce, max_instances, misfire_grace_time."),
    "SCHEDULER_TIMEZONE": ("str | tzinfo", "local zone", "Zone of every job's trigger."),
    "SCHEDULER_API_ENABLED": ("bool", "False", "Serve the REST API."),
    "SCHEDULER_VIEWS_ENABLED": ("bool", "False", "Legacy name for SCHEDULER_API_ENABLED."),
    "SCHEDULER_API_PREFIX": ("str", DEFAULT_API_PREFIX, "URL prefix of the API."),
    "SCHEDULER_ENDPOINT_PREFIX": ("str", DEFAULT_ENDPOINT_PREFIX, "Endpoint name prefix."),
    "SCHEDULER_UI_ENABLED": (
        "bool",
        "True",
        "Serve the dashboard at <prefix>/ui when the API is enabled.",
    ),
    "SCHEDULER_ALLOWED_HOSTS": ("list[str]", '["*"]', "Host names that may run jobs."),
    "SCHEDULER_AUTH": ("HTTPAuth | None", "None", "Auth scheme guarding the API."),
    "SCHEDULER_API_ALLOWED_FUNCS": (
        "list[str]",
        "[]",
        "Globs of 'module:qualname' the API may schedule, beyond jobs defined in code.",
    ),
    "SCHEDULER_API_RUN_TIMEOUT": (
        "float",
        str(DEFAULT_API_RUN_TIMEOUT),
        "Seconds POST /jobs/<id>/run waits for the run before answering 202.",
    ),
    "SCHEDULER_API_MIN_INTERVAL": (
        "float",
        str(DEFAULT_API_MIN_INTERVAL),
        "Seconds: the API refuses triggers that would fire more often (0: no floor).",
    ),
    "SCHEDULER_API_TRUSTED_HOSTS": (
        "list[str] | None",
        "None",
        "Host header names the API answers (others get 400); '.example.com' matches "
        "subdomains. None: any host.",
    ),
    "SCHEDULER_HISTORY": (
        "str | False",
        f"<instance folder>/{DEFAULT_HISTORY_FILE}",
        'Run history: a SQLite file, ":memory:", a postgresql:// URL (one history shared '
        "by every host; needs quart-sched[postgresql]), or False to record nothing.",
    ),
    "SCHEDULER_HISTORY_KEEP_RUNS": (
        "int | None",
        str(DEFAULT_HISTORY_KEEP_RUNS),
        "Runs kept per job (None: all).",
    ),
    "SCHEDULER_HISTORY_KEEP_DAYS": (
        "float | None",
        str(DEFAULT_HISTORY_KEEP_DAYS),
        "Days runs are kept (None: forever).",
    ),
    "SCHEDULER_SHUTDOWN_TIMEOUT": (
        "float",
        str(DEFAULT_SHUTDOWN_TIMEOUT),
        "Seconds running jobs get to finish when serving stops.",
    ),
    "SCHEDULER_JOBSTORE_RETRY_INTERVAL": (
        "float",
        str(DEFAULT_JOBSTORE_RETRY_INTERVAL),
        "Seconds between retries after a job store error.",
    ),
    "SCHEDULER_COORDINATION": (
        "str | False",
        '"auto"',
        'How the processes serving the app elect the one that runs jobs: "auto" (the '
        "default job store's PostgreSQL or Redis, else lock files in the instance folder), "
        '"file" or a directory, a postgresql:// or redis:// URL, or False (every process '
        "runs jobs).",
    ),
    "SCHEDULER_RERUN_INTERRUPTED": (
        "list[str]",
        "[]",
        "Globs of job ids whose runs, interrupted by the end of the leader's process, the "
        "next leader runs again (at least once instead of at most once).",
    ),
    "SCHEDULER_CLAIM_AHEAD": (
        "float",
        str(DEFAULT_CLAIM_AHEAD),
        "Seconds before their time that the leader claims the fires of in-memory jobs in "
        "the fire ledger, so that they start without waiting for a claim (0: claim each "
        "fire when it is due). A leader killed meanwhile loses what it claimed.",
    ),
    "SCHEDULER_HOST_NAME": (
        "str | None",
        "None",
        "This process's host name in SCHEDULER_ALLOWED_HOSTS, the leader's identity and the "
        "run history (None: the machine's).",
    ),
}


@dataclass(frozen=True)
class SchedulerConfig:
    """What ``init_app`` read from the app config, validated."""

    jobs: tuple[Mapping[str, Any], ...] = ()
    jobstores: Mapping[str, Any] | None = None
    executors: Mapping[str, Any] | None = None
    job_defaults: Mapping[str, Any] | None = None
    timezone: str | tzinfo | None = None
    api_enabled: bool = False
    api_prefix: str = DEFAULT_API_PREFIX
    endpoint_prefix: str = DEFAULT_ENDPOINT_PREFIX
    ui_enabled: bool = True
    allowed_hosts: tuple[str, ...] = ("*",)
    auth: Any = None
    api_allowed_funcs: tuple[str, ...] = ()
    api_run_timeout: float = DEFAULT_API_RUN_TIMEOUT
    api_min_interval: float = DEFAULT_API_MIN_INTERVAL
    api_trusted_hosts: tuple[str, ...] | None = None
    history: str | None = None
    history_keep_runs: int | None = DEFAULT_HISTORY_KEEP_RUNS
    history_keep_days: float | None = DEFAULT_HISTORY_KEEP_DAYS
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    jobstore_retry_interval: float = DEFAULT_JOBSTORE_RETRY_INTERVAL
    coordination: Any = "auto"
    rerun_interrupted: tuple[str, ...] = ()
    claim_ahead: float = DEFAULT_CLAIM_AHEAD
    host_name: str | None = None
    scheduler_options: Mapping[str, Any] = field(default_factory=dict)


def _seconds(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def _mapping(config: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a dict, got {type(value).__name__}")
    # APScheduler pops "type"/"class" out of these dicts: give it copies so the app
    # config survives a second init_app (app factories, tests).
    return {
        alias: dict(spec) if isinstance(spec, Mapping) else spec for alias, spec in value.items()
    }


def _history(config: Mapping[str, Any], instance_path: str) -> str | None:
    value = config.get("SCHEDULER_HISTORY", True)
    if value is False or value is None:
        return None
    if value is True:
        return os.path.join(instance_path, DEFAULT_HISTORY_FILE)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigurationError(
            'SCHEDULER_HISTORY must be a file path, ":memory:", a postgresql:// URL or '
            f"False, got {value!r}"
        )
    location = str(value)
    scheme = url_scheme(location)
    if scheme and not is_postgresql_url(location):
        # Not a file name anyone means: a URL of a database the history cannot use.
        raise ConfigurationError(
            f"SCHEDULER_HISTORY {scheme + '://'!r} URLs are not supported: give a SQLite "
            "file path, or a postgresql:// URL"
        )
    return location  # a URL as it is; a path as it is (relative to the working directory)


def _limit(config: Mapping[str, Any], key: str, default: float) -> Any:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{key} must be a positive number or None, got {value!r}")
    return value


def load_config(
    config: Mapping[str, Any],
    *,
    instance_path: str = ".",
    api_enabled: bool,
    api_prefix: str,
    endpoint_prefix: str,
    allowed_hosts: Sequence[str],
    auth: Any,
) -> SchedulerConfig:
    """Read the ``SCHEDULER_*`` keys of ``config``.

    The keyword arguments are the extension's attributes as the user left them before
    ``init_app``; as in Flask-APScheduler, a key present in ``config`` wins over them.
    """
    jobs = config.get("SCHEDULER_JOBS") or config.get("JOBS") or ()
    if isinstance(jobs, Mapping) or not isinstance(jobs, Sequence):
        raise ConfigurationError("SCHEDULER_JOBS must be a list of job dicts")
    for index, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise ConfigurationError(f"SCHEDULER_JOBS[{index}] must be a dict, got {job!r}")
        if "id" not in job:
            raise ConfigurationError(f"SCHEDULER_JOBS[{index}] has no 'id'")

    enabled = config.get("SCHEDULER_VIEWS_ENABLED", api_enabled)
    enabled = config.get("SCHEDULER_API_ENABLED", enabled)
    hosts = config.get("SCHEDULER_ALLOWED_HOSTS", allowed_hosts)
    if isinstance(hosts, str):
        raise ConfigurationError('SCHEDULER_ALLOWED_HOSTS must be a list, e.g. ["web1"]')

    funcs = config.get("SCHEDULER_API_ALLOWED_FUNCS") or ()
    if isinstance(funcs, str) or not all(isinstance(f, str) for f in funcs):
        raise ConfigurationError(
            'SCHEDULER_API_ALLOWED_FUNCS must be a list of globs, e.g. ["app.jobs:*"]'
        )

    trusted = config.get("SCHEDULER_API_TRUSTED_HOSTS")
    if trusted is not None and (
        isinstance(trusted, str)
        or not isinstance(trusted, Sequence)
        or not all(isinstance(h, str) and h for h in trusted)
    ):
        raise ConfigurationError(
            'SCHEDULER_API_TRUSTED_HOSTS must be a list of host names, e.g. ["sched.example.com"]'
        )

    rerun = config.get("SCHEDULER_RERUN_INTERRUPTED") or ()
    if isinstance(rerun, str) or not all(isinstance(r, str) and r for r in rerun):
        raise ConfigurationError(
            'SCHEDULER_RERUN_INTERRUPTED must be a list of job id globs, e.g. ["billing-*"]'
        )
    host_name = config.get("SCHEDULER_HOST_NAME")
    if host_name is not None and (not isinstance(host_name, str) or not host_name.strip()):
        raise ConfigurationError(f"SCHEDULER_HOST_NAME must be a host name, got {host_name!r}")

    jobstores = _mapping(config, "SCHEDULER_JOBSTORES")
    executors = _mapping(config, "SCHEDULER_EXECUTORS")
    job_defaults = _mapping(config, "SCHEDULER_JOB_DEFAULTS")
    timezone = config.get("SCHEDULER_TIMEZONE") or None
    retry = _seconds(config, "SCHEDULER_JOBSTORE_RETRY_INTERVAL", DEFAULT_JOBSTORE_RETRY_INTERVAL)

    options: dict[str, Any] = {}
    if jobstores:
        options["jobstores"] = jobstores
    if executors:
        options["executors"] = executors
    if job_defaults:
        options["job_defaults"] = dict(job_defaults)
    if timezone:
        options["timezone"] = timezone
    if "SCHEDULER_JOBSTORE_RETRY_INTERVAL" in config:
        options["jobstore_retry_interval"] = retry

    return SchedulerConfig(
        jobs=tuple(dict(job) for job in jobs),
        jobstores=jobstores,
        executors=executors,
        job_defaults=job_defaults,
        timezone=timezone,
        api_enabled=bool(enabled),
        api_prefix=config.get("SCHEDULER_API_PREFIX", api_prefix),
        endpoint_prefix=config.get("SCHEDULER_ENDPOINT_PREFIX", endpoint_prefix),
        ui_enabled=bool(config.get("SCHEDULER_UI_ENABLED", True)),
        allowed_hosts=tuple(hosts),
        auth=config.get("SCHEDULER_AUTH", auth),
        api_allowed_funcs=tuple(funcs),
        api_run_timeout=_seconds(config, "SCHEDULER_API_RUN_TIMEOUT", DEFAULT_API_RUN_TIMEOUT),
        api_min_interval=_seconds(config, "SCHEDULER_API_MIN_INTERVAL", DEFAULT_API_MIN_INTERVAL),
        api_trusted_hosts=None if trusted is None else tuple(h.lower() for h in trusted),
        history=_history(config, instance_path),
        history_keep_runs=_limit(config, "SCHEDULER_HISTORY_KEEP_RUNS", DEFAULT_HISTORY_KEEP_RUNS),
        history_keep_days=_limit(config, "SCHEDULER_HISTORY_KEEP_DAYS", DEFAULT_HISTORY_KEEP_DAYS),
        shutdown_timeout=_seconds(config, "SCHEDULER_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT),
        jobstore_retry_interval=retry,
        coordination=check_setting(config.get("SCHEDULER_COORDINATION", "auto")),
        rerun_interrupted=tuple(rerun),
        claim_ahead=_seconds(config, "SCHEDULER_CLAIM_AHEAD", DEFAULT_CLAIM_AHEAD),
        host_name=None if host_name is None else host_name.strip().lower(),
        scheduler_options=options,
    )
