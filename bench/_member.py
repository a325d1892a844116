"""A member of the failover scenario: ``python -m bench._member``, params in ``BENCH_PARAMS``.

It serves ``bench.apps.failover_app`` with ``app.test_app()`` (the serving lifecycle,
without an HTTP server: the scenario watches stdout, not requests), writes
``READY <pid> <role>`` once its scheduler knows whether it leads, and runs until SIGTERM
(a graceful stop) or SIGKILL (the scenario's failure).
"""

from __future__ import annotations

import asyncio
import os
import signal

from bench import apps


async def main() -> None:
    app = apps.failover_app()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app.test_app():
        info = await app.extensions["apscheduler"].leadership()
        os.write(1, f"READY {os.getpid()} {info['role']}\n".encode())
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
