"""The fire gate: asked once per pass, before any run starts, which fires may run here."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone

from quart import Quart

from quart_sched import APScheduler
from quart_sched._gate import Fire, FireGate

import jobfuncs
from support import wait_until


class EveryOtherJob(FireGate):
    """Admits the fires of even-numbered jobs only, and remembers every batch it saw."""

    def __init__(self) -> None:
        self.batches: list[list[Fire]] = []

    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        self.batches.append(list(fires))
        return [fire for fire in fires if int(fire.job_id.rsplit("-", 1)[1]) % 2 == 0]


async def test_only_admitted_fires_run_and_a_burst_is_one_batch(app: Quart) -> None:
    app.config["SCHEDULER_COORDINATION"] = False  # the coordinator would be the gate
    scheduler = APScheduler(app=app)
    gate = EveryOtherJob()
    scheduler.scheduler.gate = gate
    ran: list[str] = []
    scheduler.add_listener(lambda event: ran.append(event.job_id), 1 << 12)  # executed
    when = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    for number in range(20):
        scheduler.add_job(
            f"burst-{number}", jobfuncs.tick, trigger="date", run_date=when, args=["gate"]
        )
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(ran) >= 10)
        await wait_until(lambda: not scheduler.get_jobs())  # every date job was taken
    assert sorted(ran) == sorted(f"burst-{n}" for n in range(0, 20, 2))
    sizes = [len(batch) for batch in gate.batches]
    assert sizes == [20], f"one batch of 20 fires expected, got {sizes}"
    assert {fire.run_time for fire in gate.batches[0]} == {when}
