"""An app served by ``app.run(debug=True)``, Quart's reloader on (its default).

At import it writes ``IMPORTED pid=<pid> copy=<token>``; each fire of the every-second
cron job writes ``FIRE tick pid=<pid> copy=<token> n=<count>``, and a listener writes
``RAN tick <scheduled run time>`` (the lines of ``import_time.py``). The test edits a copy
of this file to make Quart reload.
"""

import itertools
import logging
import os
import uuid

from apscheduler.events import EVENT_JOB_EXECUTED
from quart import Quart

from quart_sched import APScheduler

logging.basicConfig(level=logging.INFO)

COPY = uuid.uuid4().hex[:8]
_count = itertools.count(1)


def emit(line: str) -> None:
    # Unbuffered: Quart's reloader exec()s in place, which would drop buffered output.
    os.write(1, f"{line}\n".encode())


app = Quart(__name__)
scheduler = APScheduler()
scheduler.init_app(app)


@scheduler.task("cron", id="tick", second="*")
async def tick() -> None:
    emit(f"FIRE tick pid={os.getpid()} copy={COPY} n={next(_count)}")


def ran(event) -> None:  # type: ignore[no-untyped-def]
    emit(f"RAN {event.job_id} {event.scheduled_run_time.isoformat()}")


scheduler.add_listener(ran, EVENT_JOB_EXECUTED)
emit(f"IMPORTED pid={os.getpid()} copy={COPY}")
scheduler.start()


@app.route("/")
async def index() -> dict[str, object]:
    return {"copy": COPY, "running": scheduler.running}


if __name__ == "__main__":
    app.run(port=int(os.environ["PORT"]), debug=True)
