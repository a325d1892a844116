"""An app whose scheduler is started at import time, as with ``hypercorn import_time:app``.

Every fire writes one line: ``FIRE <job> pid=<pid> copy=<token> n=<count>``; a listener
writes ``RAN <job> <scheduled run time>`` for each executed run. Two schedulers (two
processes, or two copies of this module) firing the same cron job would repeat a
scheduled time, a count, or show a second pid or token.
"""

import itertools
import logging
import os
import uuid

from apscheduler.events import EVENT_JOB_EXECUTED
from quart import Quart, current_app

from quart_sched import APScheduler

logging.basicConfig(level=logging.INFO)

COPY = uuid.uuid4().hex[:8]  # one per import of this module
_counts = {"async_tick": itertools.count(1), "plain_tick": itertools.count(1)}


def emit(line: str) -> None:
    # One write(2) per line: lines from the loop and from pool threads never interleave.
    os.write(1, f"{line}\n".encode())


def fire(job_id: str) -> None:
    assert current_app.name == __name__  # jobs run in the app's context
    emit(f"FIRE {job_id} pid={os.getpid()} copy={COPY} n={next(_counts[job_id])}")


app = Quart(__name__)
scheduler = APScheduler()
scheduler.init_app(app)


@scheduler.task("cron", id="async_tick", second="*")
async def async_tick() -> None:
    fire("async_tick")


@scheduler.task("cron", id="plain_tick", second="*")
def plain_tick() -> None:
    fire("plain_tick")


def ran(event) -> None:  # type: ignore[no-untyped-def]
    emit(f"RAN {event.job_id} {event.scheduled_run_time.isoformat()}")


scheduler.add_listener(ran, EVENT_JOB_EXECUTED)
emit(f"IMPORTED pid={os.getpid()} copy={COPY}")
scheduler.start()  # no event loop yet: starts when hypercorn serves the app


@app.route("/")
async def index() -> dict[str, object]:
    return {"running": scheduler.running, "jobs": [job.id for job in scheduler.get_jobs()]}
