"""Built once, then forked: parent and child record runs into the same history file.

As a pre-forking server does, the parent imports quart_sched, builds the app and asks
the scheduler to start before it forks. Then each process serves the app (test_app()),
runs ``tick`` ``RUNS`` times with ``run_job`` and stops, which writes its runs to
``HISTORY``. The parent waits for the child and exits with its status; each process
prints ``recorded <pid>``.
"""

import asyncio
import os
import sys

from quart import Quart

from quart_sched import APScheduler

RUNS = int(os.environ.get("RUNS", "50"))


async def tick() -> None:
    pass


app = Quart(__name__)
app.config["SCHEDULER_HISTORY"] = os.environ["HISTORY"]
scheduler = APScheduler(app=app)
scheduler.add_job("tick", tick, trigger="interval", hours=1)
scheduler.start()  # no loop yet: it starts when each process serves


async def serve() -> None:
    async with app.test_app():
        for _ in range(RUNS):
            await scheduler.run_job("tick")
    print(f"recorded {os.getpid()}", flush=True)


if __name__ == "__main__":
    child = os.fork()
    asyncio.run(serve())
    if child == 0:
        os._exit(0)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
