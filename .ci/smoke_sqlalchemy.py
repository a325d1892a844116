"""The ``sqlalchemy`` extra is enough for a SQLAlchemyJobStore app: it starts, fires a job
that is stored in the database, and lists it over the REST API. Run by .ci/extras.sh in a
venv that has only ``quart-sched[sqlalchemy]``."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from quart import Quart

from quart_sched import APScheduler

fired: list[float] = []


def tick() -> None:
    fired.append(time.monotonic())


async def main(db: Path) -> None:
    app = Quart("smoke")
    app.config.update(
        SCHEDULER_JOBSTORES={"default": {"type": "sqlalchemy", "url": f"sqlite:///{db}"}},
        SCHEDULER_API_ENABLED=True,
        SCHEDULER_HISTORY=False,
    )
    scheduler = APScheduler(app=app)
    scheduler.add_job("tick", tick, trigger="interval", seconds=1)
    scheduler.start()
    async with app.test_app():
        deadline = time.monotonic() + 10
        while len(fired) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the job did not fire twice within 10 s")
            await asyncio.sleep(0.05)
        response = await app.test_client().get("/scheduler/jobs")
        listed = [job["id"] for job in await response.get_json()]
        if listed != ["tick"]:
            raise SystemExit(f"GET /scheduler/jobs answered {listed!r}")
    with sqlite3.connect(db) as conn:
        stored = [row[0] for row in conn.execute("SELECT id FROM apscheduler_jobs")]
    if stored != ["tick"]:
        raise SystemExit(f"the job store holds {stored!r}")
    print(f"sqlalchemy smoke: fired {len(fired)} times, stored and listed")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "jobs.sqlite"))
