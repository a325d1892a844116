"""Flask-APScheduler's tutorial, on Quart: only the imports changed.

Run it from the repository root or from this directory::

    python examples/run.py                  # Quart's development server, port 5000
    cd examples && hypercorn run:app        # an ASGI server, as in production

``job1`` prints ``3`` every 3 seconds, ``tick`` (an ``async def`` job) prints ``tick``,
and http://127.0.0.1:5000/ says the scheduler is running and lists the jobs. The
dashboard, http://127.0.0.1:5000/scheduler/ui, shows them, their runs and their errors,
and lets you pause, run or add jobs (give it ``SCHEDULER_AUTH`` before you deploy it).
``PORT`` and ``EXAMPLE_INTERVAL`` (seconds) override the port and the interval.

About ``"func": "run:add"``: run as ``python run.py`` this file is the module
``__main__``, so resolving ``run:add`` imports it a second time as the module ``run``.
That copy builds its own app and scheduler, which never serve (``app.run()`` is guarded
below) and therefore never start: the jobs fire once, from this copy's scheduler, calling
``run.add``. ``add`` must be defined before ``init_app`` for that nested import to find it.
"""

import os

from quart import Quart, url_for

from quart_sched import APScheduler

INTERVAL = float(os.environ.get("EXAMPLE_INTERVAL", "3"))


class Config:
    JOBS = [
        {
            "id": "job1",
            "func": "run:add",
            "args": (1, 2),
            "trigger": "interval",
            "seconds": INTERVAL,
        }
    ]

    SCHEDULER_API_ENABLED = True


def add(a, b):
    print(a + b, flush=True)


app = Quart(__name__)
app.config.from_object(Config())

scheduler = APScheduler()
scheduler.init_app(app)
scheduler.start()


@scheduler.task("interval", id="tick", seconds=INTERVAL)
async def tick():
    print("tick", flush=True)


@app.route("/")
async def index():
    state = "running" if scheduler.running else "not running"
    return {
        "message": f"The scheduler is {state}",
        "jobs": [job.id for job in scheduler.get_jobs()],
        "dashboard": url_for("scheduler.dashboard", _external=True),
    }


if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
