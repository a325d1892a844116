"""An app with jobs still running when serving stops.

``slow_async`` and ``slow_plain`` start as soon as the app serves, write ``started
<job>``, sleep ``JOB_SECONDS`` (default 1.5) and write ``finished <job>``.
``SCHEDULER_SHUTDOWN_TIMEOUT`` comes from the environment when set. ``JOBS`` picks the
jobs (default both). Run directly, it serves with ``app.run()`` on ``PORT``.
"""

import asyncio
import logging
import os
import time

from quart import Quart

from quart_sched import APScheduler

logging.basicConfig(level=logging.INFO)

JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "1.5"))
JOBS = os.environ.get("JOBS", "slow_async,slow_plain").split(",")


def emit(line: str) -> None:
    os.write(1, f"{line}\n".encode())


async def slow_async() -> None:
    emit("started slow_async")
    await asyncio.sleep(JOB_SECONDS)
    emit("finished slow_async")


def slow_plain() -> None:
    emit("started slow_plain")
    time.sleep(JOB_SECONDS)
    emit("finished slow_plain")


app = Quart(__name__)
if "SCHEDULER_SHUTDOWN_TIMEOUT" in os.environ:
    app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = float(os.environ["SCHEDULER_SHUTDOWN_TIMEOUT"])
scheduler = APScheduler(app=app)
for job_id in JOBS:
    # A date trigger without a date runs once, now; however late the app starts serving.
    scheduler.add_job(job_id, f"{__name__}:{job_id}", trigger="date", misfire_grace_time=None)
scheduler.start()


@app.route("/")
async def index() -> str:
    return "ok"


if __name__ == "__main__":
    app.run(port=int(os.environ["PORT"]))
