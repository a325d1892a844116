"""A worker of the deployment in test_coordination's re-run test, in its own process:
``python rerun_worker.py INSTANCE_DIR RUN_DATE``. It prints ``leading`` once it leads and
``started <job id>`` as each long run starts, then runs until it is killed."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

from quart import Quart

from quart_sched import APScheduler, current_run


async def long_run() -> None:
    print("started", current_run.job_id, flush=True)
    await asyncio.sleep(3600)


async def main(instance: str, run_date: datetime) -> None:
    app = Quart("deployment", instance_path=instance)
    app.config.update(SCHEDULER_HISTORY=False, SCHEDULER_RERUN_INTERRUPTED=["again-*"])
    scheduler = APScheduler(app=app)
    for job_id in ("again-1", "once"):
        scheduler.add_job(
            job_id, long_run, trigger="date", run_date=run_date, misfire_grace_time=60
        )
    scheduler.start()
    async with app.test_app():
        print("leading" if scheduler.is_leader else "standby", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], datetime.fromisoformat(sys.argv[2])))
