"""Coordination of many workers and hosts: which backend ``SCHEDULER_COORDINATION`` means.

``"auto"`` (the default) picks from what the app already uses: the default job store's
PostgreSQL database, a ``RedisJobStore``'s server, else lock files in the instance folder
(the processes of one host). ``"file"`` or a directory, a ``postgresql://`` or
``redis://`` URL choose one; ``False`` turns coordination off (every process runs jobs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from .._stores import unwrap
from .._urls import POSTGRESQL_SCHEMES, REDIS_SCHEMES, url_scheme, without_password
from ..errors import ConfigurationError
from .backend import Backend, coordination_key

OFF = "off"
FILE = "file"
POSTGRESQL = "postgresql"
REDIS = "redis"


@dataclass(frozen=True)
class CoordinationPlan:
    """The backend chosen for one app: ``kind``, where (a directory or a URL), and the
    key naming this app and its job stores in it."""

    kind: str
    location: str
    key: str

    def backend(self) -> Backend:
        """A new (unopened) backend for this plan."""
        if self.kind == FILE:
            from .file import FileBackend

            return FileBackend(self.key, directory=self.location)
        if self.kind == POSTGRESQL:
            from .postgres import PostgresBackend

            return PostgresBackend(self.key, url=self.location)
        if self.kind == REDIS:
            from .redis import RedisBackend

            return RedisBackend(self.key, url=self.location)
        raise ValueError(f"coordination is {self.kind}")

    @property
    def shown_location(self) -> str:
        """``location`` without a password, for logs and the API."""
        return without_password(self.location)


#: Strings that turn coordination off, as False does (any case, around spaces).
OFF_WORDS = frozenset({"off", "false", "none", "no", "0"})


def check_setting(setting: Any) -> str | bool:
    """``SCHEDULER_COORDINATION`` as a string, or False when off.

    :raises ConfigurationError: for a value it does not understand
    """
    if setting is False or setting is None:
        return False
    if isinstance(setting, str) and setting.strip().lower() in OFF_WORDS:
        return False  # from an environment variable, say: never a directory named "off"
    if isinstance(setting, (str, os.PathLike)) and os.fspath(setting):
        value = os.fspath(setting)
        scheme = url_scheme(value)
        if not scheme or scheme in POSTGRESQL_SCHEMES + REDIS_SCHEMES:
            return value
    raise ConfigurationError(
        'SCHEDULER_COORDINATION must be "auto", "file", a directory, a postgresql:// or '
        f'redis:// URL, or False (or "off"); got {setting!r}'
    )


def plan_coordination(
    setting: Any, *, app_name: str, instance_path: str, stores: dict[str, Any]
) -> CoordinationPlan:
    """The plan ``SCHEDULER_COORDINATION = setting`` means for this app and its stores.

    :raises ConfigurationError: for a value it does not understand
    """
    key = coordination_key(app_name, *sorted(_describe(a, s) for a, s in stores.items()))
    value = check_setting(setting)
    if value is False:
        return CoordinationPlan(OFF, instance_path, key)
    assert isinstance(value, str)
    if value == "auto":
        return _auto(stores.get("default"), key, instance_path)
    if value == FILE:
        return CoordinationPlan(FILE, instance_path, key)
    scheme = url_scheme(value)
    if scheme in POSTGRESQL_SCHEMES:
        return CoordinationPlan(POSTGRESQL, value, key)
    if scheme in REDIS_SCHEMES:
        return CoordinationPlan(REDIS, value, key)
    return CoordinationPlan(FILE, os.path.abspath(value), key)


def _auto(store: Any, key: str, instance_path: str) -> CoordinationPlan:
    store = unwrap(store) if store is not None else None
    url = _postgres_url(store)
    if url is not None:
        return CoordinationPlan(POSTGRESQL, url, key)
    url = _redis_url(store)
    if url is not None:
        return CoordinationPlan(REDIS, url, key)
    return CoordinationPlan(FILE, instance_path, key)


def _postgres_url(store: Any) -> str | None:
    """The PostgreSQL URL of a SQLAlchemyJobStore on PostgreSQL (driver dropped)."""
    engine = getattr(store, "engine", None)
    url = getattr(engine, "url", None)
    if url is None or url.get_backend_name() != "postgresql":
        return None
    rendered: str = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return rendered


def _redis_url(store: Any) -> str | None:
    """The URL of a RedisJobStore's server."""
    if type(store).__name__ != "RedisJobStore":
        return None
    kwargs = store.redis.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    auth = ""
    if kwargs.get("password"):
        user = quote(kwargs.get("username") or "", safe="")
        auth = f"{user}:{quote(kwargs['password'], safe='')}@"
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    return f"{scheme}://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def _describe(alias: str, store: Any) -> str:
    """What tells this job store from another app's (no password)."""
    store = unwrap(store)
    engine = getattr(store, "engine", None)
    if engine is not None:
        table = getattr(getattr(store, "jobs_t", None), "name", "")
        return f"{alias}={engine.url.render_as_string(hide_password=True)}#{table}"
    if type(store).__name__ == "RedisJobStore":
        kwargs = store.redis.connection_pool.connection_kwargs
        where = f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db')}"
        return f"{alias}=redis://{where}#{store.jobs_key}"
    return f"{alias}={type(store).__name__}"
