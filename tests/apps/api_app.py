"""An app serving the REST API behind Basic auth, for ``hypercorn api_app:app``.

``scheduler.start()`` runs at import time, before Hypercorn's loop exists: the scheduler
really starts when the app serves. ``GET /calls`` (not part of the API, not guarded)
shows what the ``greet`` job recorded, so a test can see that a run over HTTP happened,
in the app's context.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, current_app

from quart_sched import APScheduler
from quart_sched.auth import HTTPBasicAuth

app = Quart(__name__)
app.config.update(
    SCHEDULER_API_ENABLED=True,
    SCHEDULER_AUTH=HTTPBasicAuth(users={"admin": "secret"}),
    SCHEDULER_API_ALLOWED_FUNCS=[f"{__name__}:*"],
    SCHEDULER_SHUTDOWN_TIMEOUT=2,
)
scheduler = APScheduler(app=app)

CALLS: list[dict[str, Any]] = []


async def greet(name: str) -> str:
    CALLS.append({"name": name, "app": current_app.name})
    return name


@app.get("/calls")
async def calls() -> dict[str, Any]:
    return {"calls": CALLS}


scheduler.start()  # no event loop yet: starts when Hypercorn serves the app
