"""An app whose API may schedule ``pkgglob.tasks:*`` and ``pkgglob.exiting:*``, for
``hypercorn pkgglob_app:app``: a client must not import a submodule through the package
glob, nor end the worker with a module that raises ``SystemExit`` on import."""

from __future__ import annotations

from quart import Quart

from quart_sched import APScheduler

app = Quart(__name__)
app.config.update(
    SCHEDULER_API_ENABLED=True,
    SCHEDULER_API_ALLOWED_FUNCS=["pkgglob.tasks:*", "pkgglob.exiting:*"],
    SCHEDULER_HISTORY=False,
    SCHEDULER_SHUTDOWN_TIMEOUT=2,
)
scheduler = APScheduler(app=app)
scheduler.start()  # no event loop yet: starts when Hypercorn serves the app
