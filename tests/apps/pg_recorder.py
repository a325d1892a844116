"""Records a run that never ends into the PostgreSQL run history ``HISTORY`` under the host
name ``HOST``, as a process of another host would; prints ``running <run_id>`` once the
row is written, then waits to be killed. Its heartbeat comes every ``HEARTBEAT`` s.
"""

import asyncio
import os

from quart_sched._history_pg import PostgresRunHistory


async def main() -> None:
    history = PostgresRunHistory(
        os.environ["HISTORY"],
        host=os.environ["HOST"],
        heartbeat_interval=float(os.environ.get("HEARTBEAT", "10")),
    )
    history.hold("child")
    run_id = history.started("forever", None)
    for _ in range(300):  # 15 s at most
        if run_id in {run["run_id"] for run in await history.running()}:
            break
        await asyncio.sleep(0.05)
    else:
        raise SystemExit(f"run not written: {history.error}")
    print(f"running {run_id}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
