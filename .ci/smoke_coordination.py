"""The ``postgresql`` and ``redis`` extras are enough to coordinate through their server:
``python .ci/smoke_coordination.py postgresql|redis``, run by .ci/extras.sh in a venv that
has only ``quart-sched[postgresql]`` or ``quart-sched[redis]``.

Two apps of one deployment (same name) coordinate through the server: the first leads and
runs the job, the second stands by and names the leader; with PostgreSQL the run history
is in the database too (``SCHEDULER_HISTORY = "postgresql://…"``).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from typing import Any

from quart import Quart

from quart_sched import APScheduler, current_run

URLS = {"postgresql": "postgresql://127.0.0.1/test", "redis": "redis://127.0.0.1:6379/0"}
RAN: list[tuple[str, str]] = []


async def tick() -> None:
    RAN.append((current_run.job_id, current_run.run_id))


def worker(kind: str, name: str, instance: str) -> tuple[Quart, APScheduler]:
    app = Quart(name, instance_path=instance)
    config: dict[str, Any] = {
        "SCHEDULER_COORDINATION": URLS[kind],
        "SCHEDULER_API_ENABLED": True,
        "SCHEDULER_HISTORY": URLS[kind] if kind == "postgresql" else False,
    }
    app.config.update(config)
    scheduler = APScheduler(app=app)
    scheduler.add_job("tick", tick, trigger="interval", seconds=1)
    return app, scheduler


async def main(kind: str) -> None:
    name = f"smoke_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        (leader_app, leader), (standby_app, standby) = (
            worker(kind, name, one),
            worker(kind, name, two),
        )
        leader.start()
        async with leader_app.test_app():
            standby.start()
            async with standby_app.test_app():
                if not leader.is_leader or standby.is_leader:
                    raise SystemExit(f"roles: {leader.is_leader=} {standby.is_leader=}")
                info = await (await standby_app.test_client().get("/scheduler")).get_json()
                if info["role"] != "standby" or info["coordination"]["backend"] != kind:
                    raise SystemExit(f"GET /scheduler on the standby answered {info!r}")
                deadline = time.monotonic() + 10
                while len(RAN) < 2:
                    if time.monotonic() > deadline:
                        raise SystemExit("the job did not run twice within 10 s")
                    await asyncio.sleep(0.05)
            if kind == "postgresql":
                deadline = time.monotonic() + 10
                while not (await leader.get_runs("tick")).runs:
                    if time.monotonic() > deadline:
                        raise SystemExit("no run recorded in PostgreSQL within 10 s")
                    await asyncio.sleep(0.1)
    print(f"{kind} smoke: one leader, one standby, {len(RAN)} runs")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
