"""An app with the API and dashboard behind Basic auth, for ``hypercorn dashboard_app:app``.

Jobs of each trigger kind; ``flaky`` fails every other run and ``slow`` takes two seconds, so
the page has outcomes, durations and a traceback to show. ``DASHBOARD_HISTORY`` names the
run-history file (a test's temporary folder).
"""

from __future__ import annotations

import asyncio
import itertools
import os

from quart import Quart

from quart_sched import APScheduler
from quart_sched.auth import HTTPBasicAuth

app = Quart(__name__)
app.config.update(
    SCHEDULER_API_ENABLED=True,
    SCHEDULER_AUTH=HTTPBasicAuth(users={"admin": "secret"}),
    SCHEDULER_API_ALLOWED_FUNCS=[f"{__name__}:*"],
    SCHEDULER_HISTORY=os.environ.get("DASHBOARD_HISTORY", ":memory:"),
    SCHEDULER_TIMEZONE="Europe/Paris",
    SCHEDULER_SHUTDOWN_TIMEOUT=2,
)
scheduler = APScheduler(app=app)
_attempts = itertools.count()


async def heartbeat() -> None:
    await asyncio.sleep(0.05)


async def slow(seconds: float = 2.0) -> None:
    await asyncio.sleep(seconds)


def flaky() -> None:
    if next(_attempts) % 2:
        raise ConnectionError("mail server refused the connection")


async def report(recipient: str) -> str:
    return recipient


scheduler.add_job("heartbeat", heartbeat, trigger="interval", seconds=2, name="Heartbeat")
scheduler.add_job("flaky", flaky, trigger="interval", seconds=3, name="Send mail")
scheduler.add_job("slow", slow, trigger="cron", minute=0, timezone="Asia/Shanghai")
scheduler.add_job("report", report, trigger="cron", hour=6, minute=30, args=["ops@example.com"])
scheduler.add_job("newyear", heartbeat, trigger="date", run_date="2030-01-01T00:00:00")
scheduler.start()  # no event loop yet: starts when Hypercorn serves the app
