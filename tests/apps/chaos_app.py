"""An app for the chaos tests (``tests/test_chaos.py``): many processes serve it, one leads.

Served as ``hypercorn chaos_app:app`` from this folder, configured by the environment:

- ``CHAOS_RECORD``, ``CHAOS_TABLE``: the PostgreSQL database (a ``postgresql://`` URL) and
  table where every run is recorded (created if missing, with **no** unique key: a fire
  that ran twice shows as two rows);
- ``CHAOS_STORE``: the default job store: ``memory`` (the default), or a
  ``postgresql+psycopg://`` or ``sqlite:///`` URL (a SQLAlchemyJobStore, table
  ``CHAOS_STORE_KEY``), or a
  ``redis://host:port/db`` URL (a RedisJobStore, keys ``CHAOS_STORE_KEY.jobs`` and
  ``CHAOS_STORE_KEY.run_times``);
- ``CHAOS_INSTANCE``: the app's instance folder (the file backend's lock files);
- ``SCHEDULER_COORDINATION`` and ``SCHEDULER_HOST_NAME``: as the config keys, when set.

Two jobs fire every whole second: ``tick_interval`` (an ``async def``, interval 1 s from a
fixed start date, so every process computes the same run times) and ``tick_cron`` (a
plain function, cron ``second='*'``); ``coalesce=False`` and a 30 s misfire grace time, so
a new leader runs the fires that came due during a failover. Each run inserts (job id,
scheduled run time from ``current_run``, host, pid, when it ran). Every response carries
``X-Chaos-Pid``: the worker that answered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg
from quart import Quart, Response

from quart_sched import APScheduler, current_run

logging.basicConfig(level=logging.INFO)

RECORD = os.environ["CHAOS_RECORD"]
TABLE = os.environ["CHAOS_TABLE"]
HOST = os.environ.get("SCHEDULER_HOST_NAME") or socket.gethostname()
GRACE = 30


def _insert(row: tuple[str, Any, str, int, float]) -> None:
    with psycopg.connect(RECORD, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{TABLE}" (job_id, run_time, host, pid, ran_at) '
            "VALUES (%s, %s, %s, %s, %s)",
            row,
        )


def _create_table() -> None:
    with psycopg.connect(RECORD, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{TABLE}" (job_id TEXT NOT NULL, '
            "run_time TIMESTAMPTZ NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, "
            "ran_at DOUBLE PRECISION NOT NULL)"
        )


def _row() -> tuple[str, Any, str, int, float]:
    return (current_run.job_id, current_run.scheduled_run_time, HOST, os.getpid(), time.time())


async def tick_interval() -> None:
    await asyncio.to_thread(_insert, _row())


def tick_cron() -> None:
    _insert(_row())


def _jobstores() -> dict[str, Any]:
    store = os.environ.get("CHAOS_STORE", "memory")
    key = os.environ.get("CHAOS_STORE_KEY", "chaos")
    if store == "memory":
        return {}
    if store.startswith(("postgresql", "sqlite")):
        return {"default": {"type": "sqlalchemy", "url": store, "tablename": key}}
    if store.startswith("redis://"):
        url = urlsplit(store)
        return {
            "default": {
                "type": "redis",
                "host": url.hostname,
                "port": url.port or 6379,
                "db": int(url.path.strip("/") or 0),
                "jobs_key": f"{key}.jobs",
                "run_times_key": f"{key}.run_times",
            }
        }
    raise ValueError(f"CHAOS_STORE: {store!r}")


#: max_instances: a slow insert must not make the next fire skip (it would count as lost).
_DEFAULTS = {
    "coalesce": False,
    "misfire_grace_time": GRACE,
    "max_instances": 10,
    "replace_existing": True,
}

app = Quart(__name__, instance_path=os.environ.get("CHAOS_INSTANCE"))
app.config.update(
    SCHEDULER_API_ENABLED=True,
    SCHEDULER_TIMEZONE="UTC",
    SCHEDULER_JOBSTORES=_jobstores(),
    SCHEDULER_JOBS=[
        {
            "id": "tick_interval",
            "func": "chaos_app:tick_interval",
            "trigger": "interval",
            "seconds": 1,
            "start_date": "2020-01-01T00:00:00+00:00",
            **_DEFAULTS,
        },
        {"id": "tick_cron", "func": "chaos_app:tick_cron", "trigger": "cron", "second": "*"}
        | _DEFAULTS,
    ],
)
for name in ("SCHEDULER_COORDINATION", "SCHEDULER_HOST_NAME"):
    if name in os.environ:
        app.config[name] = os.environ[name]
_create_table()
scheduler = APScheduler(app=app)
scheduler.start()  # no event loop yet: starts when Hypercorn serves the app


@app.after_request
async def tell_pid(response: Response) -> Response:
    response.headers["X-Chaos-Pid"] = str(os.getpid())
    return response
