"""An app for ``quart --app cli_app scheduler …``, on a SQLite job store at ``JOBSTORE``.

Jobs (from config, as a deploy would declare them):

* ``ticker`` every ``TICK`` seconds (default 0.3) appends a line to ``TICKS`` (a file);
* ``daily`` at 06:30 every day, never run by the tests;
* ``slow`` (a one-off in 2099) sleeps ``SLOW_SECONDS`` (default 1.5), writing ``started``
  and ``finished`` lines to ``TICKS``, so that a test can stop a worker mid-run;
* ``failing`` (a one-off in 2099) raises, with a terminal escape in its message.

``SLOW_NOW=1`` makes ``slow`` run as soon as the scheduler starts (then hourly);
``HEARTBEAT=1`` adds ``heartbeat``, appending ``beat`` every 0.1 s (it keeps a server
waking up, a clock for tests); ``BAD_FUNC=1`` adds a job whose function does not exist;
``EXTRA=1`` adds ``extra``, whose function exists only then; ``HISTORY`` is the run
history file; ``API=1`` serves the REST API; ``START=0`` leaves ``scheduler.start()``
out (a web app leaving jobs to a worker).
"""

import asyncio
import os
from datetime import datetime, timezone
from pathlib import Path

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from quart import Quart

from quart_sched import APScheduler

TICKS = Path(os.environ.get("TICKS", os.devnull))
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "1.5"))


def note(line: str) -> None:
    with TICKS.open("a") as out:
        out.write(f"{line} {os.getpid()}\n")


async def tick() -> None:
    note("tick")


def report() -> None:
    note("report")


async def slow() -> None:
    note("started")
    await asyncio.sleep(SLOW_SECONDS)
    note("finished")


async def beat() -> None:
    note("beat")


async def failing() -> None:
    raise RuntimeError("failing on purpose\x1b[2J")  # with a "clear the screen" escape


JOBS = [
    {
        "id": "ticker",
        "func": f"{__name__}:tick",
        "trigger": "interval",
        "seconds": float(os.environ.get("TICK", "0.3")),
    },
    {"id": "daily", "func": f"{__name__}:report", "trigger": "cron", "hour": 6, "minute": 30},
    {"id": "slow", "func": f"{__name__}:slow", "trigger": "date", "run_date": "2099-01-01"},
    {"id": "failing", "func": f"{__name__}:failing", "trigger": "date", "run_date": "2099-01-01"},
]
if os.environ.get("SLOW_NOW") == "1":  # runs as soon as the scheduler starts, then hourly
    JOBS[2] = {
        "id": "slow",
        "func": f"{__name__}:slow",
        "trigger": "interval",
        "hours": 1,
        "next_run_time": datetime.now(timezone.utc),
        "misfire_grace_time": None,
    }
if os.environ.get("HEARTBEAT") == "1":
    JOBS.append(
        {"id": "heartbeat", "func": f"{__name__}:beat", "trigger": "interval", "seconds": 0.1}
    )
if os.environ.get("EXTRA") == "1":  # a job whose function exists only with EXTRA=1

    def extra() -> None:
        note("extra")

    JOBS.append({"id": "extra", "func": f"{__name__}:extra", "trigger": "interval", "hours": 1})
if os.environ.get("BAD_FUNC") == "1":
    JOBS.append(
        {"id": "broken", "func": f"{__name__}:no_such_function", "trigger": "interval", "hours": 1}
    )

app = Quart(__name__)
app.config["SCHEDULER_JOBS"] = JOBS
if os.environ.get("JOBSTORE"):
    app.config["SCHEDULER_JOBSTORES"] = {
        "default": SQLAlchemyJobStore(url=f"sqlite:///{os.environ['JOBSTORE']}")
    }
app.config["SCHEDULER_HISTORY"] = os.environ.get("HISTORY", False) or False
app.config["SCHEDULER_TIMEZONE"] = "UTC"
app.config["SCHEDULER_API_ENABLED"] = os.environ.get("API") == "1"
app.config["SCHEDULER_SHUTDOWN_TIMEOUT"] = float(os.environ.get("SHUTDOWN_TIMEOUT", "10"))
scheduler = APScheduler(app=app)
if os.environ.get("START", "1") == "1":
    scheduler.start()


@app.route("/")
async def index() -> str:
    return "ok"
