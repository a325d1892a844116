"""The application-factory pattern: the extension at module level, the app built later.

    hypercorn "examples.factory:create_app()"     # from the repository root
    python examples/factory.py                    # port 5000 (PORT overrides it)

Hypercorn evaluates what follows the colon in the module, so ``create_app()`` is
called once in each worker. ``scheduler.start()`` inside the factory runs before any
event loop exists: the scheduler really starts when the app begins serving, on the
serving loop, and stops (letting running jobs finish) when serving stops.
``EXAMPLE_INTERVAL`` overrides the 3 s interval.
"""

import os

from quart import Quart, current_app

from quart_sched import APScheduler

INTERVAL = float(os.environ.get("EXAMPLE_INTERVAL", "3"))

scheduler = APScheduler()


class Config:
    GREETING = "hello from the factory"
    SCHEDULER_API_ENABLED = True


# Jobs may be declared before init_app; they get the app's SCHEDULER_TIMEZONE.
@scheduler.task("interval", id="greet", seconds=INTERVAL)
async def greet():
    # Jobs run with an app context: current_app is the app create_app() built.
    print(f"greet: {current_app.config['GREETING']}", flush=True)


@scheduler.task("interval", id="count_jobs", seconds=INTERVAL)
def count_jobs():
    # A plain function runs in a thread, with the same app context.
    print(f"count_jobs: {len(scheduler.get_jobs())} jobs in {current_app.name}", flush=True)


def create_app() -> Quart:
    app = Quart(__name__)
    app.config.from_object(Config)
    scheduler.init_app(app)
    scheduler.start()

    @app.route("/")
    async def index():
        state = "running" if scheduler.running else "not running"
        return {
            "message": f"The scheduler is {state}",
            "jobs": [job.id for job in scheduler.get_jobs()],
        }

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ.get("PORT", "5000")))
