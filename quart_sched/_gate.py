"""The fire gate: the wake-up pass asks it, before any run starts, which fires may run here.

A fire is one scheduled run: a job id and the time it was scheduled for. With one process
every fire may run (:class:`OpenGate`). Coordination between processes plugs in here: a
gate that admits a fire only while this process leads, and only once it has claimed the
fire in a shared ledger, makes each fire run once across processes and hosts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Fire:
    """One scheduled run of a job."""

    job_id: str
    run_time: datetime


class FireGate(ABC):
    """Decides which due fires this process runs. Called once per pass with every fire
    the pass took, so a backend can claim them in one round trip."""

    @abstractmethod
    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        """The fires of ``fires`` this process may run now; the others are not run."""


class OpenGate(FireGate):
    """Every fire runs: one process, or coordination turned off."""

    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        return fires


OPEN_GATE = OpenGate()
