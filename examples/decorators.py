"""Flask-APScheduler's decorator example, on Quart: only the imports changed.

    python examples/decorators.py                 # port 5000 (PORT overrides it)
    cd examples && hypercorn decorators:app

Jobs are declared with ``@scheduler.task``, APScheduler's ``scheduled_job`` signature;
``async def`` jobs run on the serving loop, plain ``def`` jobs in a thread pool.
Triggers use ``SCHEDULER_TIMEZONE``. ``EXAMPLE_INTERVAL`` overrides ``do_job_1``'s 30 s.
"""

import os

from quart import Quart

from quart_sched import APScheduler

INTERVAL = float(os.environ.get("EXAMPLE_INTERVAL", "30"))


class Config:
    SCHEDULER_API_ENABLED = True
    SCHEDULER_TIMEZONE = "Asia/Shanghai"


app = Quart(__name__)
app.config.from_object(Config())

scheduler = APScheduler()
# Without a config class, set the options before init_app:
# scheduler.api_enabled = True
scheduler.init_app(app)


# interval example
@scheduler.task("interval", id="do_job_1", seconds=INTERVAL, misfire_grace_time=900)
def job1():
    print("Job 1 executed", flush=True)


# cron examples
@scheduler.task("cron", id="do_job_2", minute="*")
async def job2():
    print("Job 2 executed", flush=True)


@scheduler.task("cron", id="do_job_3", week="*", day_of_week="sun")
async def job3():
    print("Job 3 executed", flush=True)


@app.route("/")
async def index():
    return {
        "message": "The scheduler is running" if scheduler.running else "Not running",
        "jobs": {
            job.id: job.next_run_time.isoformat() if job.next_run_time else None
            for job in scheduler.get_jobs()
        },
    }


scheduler.start()

if __name__ == "__main__":
    app.run(port=int(os.environ.get("PORT", "5000")))
