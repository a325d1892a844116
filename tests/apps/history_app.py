"""An app recording its runs in the history file ``HISTORY``, to be killed mid-run.

As soon as it serves it runs ``quick_1`` .. ``quick_3`` (succeed), ``failing`` (raises)
and ``long_job`` (sleeps ``JOB_SECONDS``, default 60); with ``BUSY=1`` it also runs
``busy`` every 20 ms, so that the history is written to all the time. Run directly, it
serves with ``app.run()`` on ``PORT`` in this very process (no reloader, no worker
process): a test can SIGKILL it and reap it.
"""

import asyncio
import logging
import os

from quart import Quart

from quart_sched import APScheduler

logging.basicConfig(level=logging.INFO)

JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "60"))


async def long_job() -> None:
    await asyncio.sleep(JOB_SECONDS)


async def quick() -> str:
    return "done"


async def failing() -> None:
    raise RuntimeError("failing on purpose")


def busy() -> None:
    pass


app = Quart(__name__)
app.config["SCHEDULER_HISTORY"] = os.environ["HISTORY"]
scheduler = APScheduler(app=app)
for job_id, func in [
    ("quick_1", quick),
    ("quick_2", quick),
    ("quick_3", quick),
    ("failing", failing),
    ("long_job", long_job),
]:
    # A date trigger without a date runs once, now, however late the app starts serving.
    scheduler.add_job(job_id, func, trigger="date", misfire_grace_time=None)
if os.environ.get("BUSY") == "1":
    scheduler.add_job("busy", busy, trigger="interval", seconds=0.02, max_instances=5)
scheduler.start()


@app.route("/")
async def index() -> str:
    return "ok"


if __name__ == "__main__":
    app.run(port=int(os.environ["PORT"]), use_reloader=False)
