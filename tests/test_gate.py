"""The fire gate: asked once per pass, before any run starts, which fires may run here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from quart import Quart

from quart_sched import APScheduler
from quart_sched._gate import Fire, FireGate
from quart_sched._scheduler import wakeup

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


class SlowGate(EveryOtherJob):
    """Takes 50 ms per batch, as a round trip to a ledger may; notes when each batch was
    asked for and when the first run started."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        self.asked.append(time.monotonic())
        await asyncio.sleep(0.05)
        return await super().admit(fires)


async def test_a_large_burst_is_claimed_in_slices_while_the_first_runs(app: Quart) -> None:
    app.config["SCHEDULER_COORDINATION"] = False
    scheduler = APScheduler(app=app)
    gate = SlowGate()
    scheduler.scheduler.gate = gate
    first_run: list[float] = []

    def mark(event: Any) -> None:
        first_run.append(time.monotonic())

    scheduler.add_listener(mark, 1 << 12)  # executed
    when = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    n = wakeup.TAKE_SLICE + 10  # two takes from the store: the first claimed in two
    for number in range(n):
        scheduler.add_job(
            f"burst-{number}", jobfuncs.tick, trigger="date", run_date=when, args=["slices"]
        )
    scheduler.start()
    async with app.test_app():
        await wait_until(lambda: len(first_run) >= (n + 1) // 2, timeout=10)
    sizes = [len(batch) for batch in gate.batches]
    # A small first claim, then the rest of the first take; then the second take.
    assert wakeup.CLAIM_SLICE < wakeup.TAKE_SLICE <= wakeup.CLAIM_SLICE * 3
    assert sizes == [wakeup.CLAIM_SLICE, wakeup.TAKE_SLICE - wakeup.CLAIM_SLICE, 10], sizes
    # Runs of the first slice started before the last slice was asked for.
    assert min(first_run) < gate.asked[-1]
    assert len(first_run) == (n + 1) // 2  # only the admitted ones ran
