"""The fire gate: the wake-up pass asks it, before any run starts, which fires may run here.

A fire is one scheduled run: a job id and the time it was scheduled for. With one process
every fire may run (:class:`OpenGate`). Coordination between processes plugs in here: a
gate that admits a fire only while this process leads, and only once it has claimed the
fire in a shared ledger, makes each fire run once across processes and hosts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Fire:
    """One scheduled run of a job. ``keep_until``: until when a ledger must remember it
    (after that, no process could still find it due); not part of its identity.

    :meth:`FireGate.admit` answers with the very objects it was given."""

    job_id: str
    run_time: datetime
    keep_until: datetime | None = field(default=None, compare=False)


class FireGate(ABC):
    """Decides which due fires this process runs. Called once per pass with every fire
    the pass took, so a backend can claim them in one round trip."""

    def may_take(self) -> bool:
        """Whether this process may take due fires from the job stores now (recording
        their next run times there). A standby must not: the leader takes them."""
        return True

    @abstractmethod
    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        """The fires of ``fires`` this process may run now (the same objects); the others
        are not run."""

    def reserves(self) -> bool:
        """Whether :meth:`reserve` is worth calling now (a gate that claims fires does)."""
        return False

    def reserve(self, fires: Sequence[Fire]) -> None:  # noqa: B027  (optional hook)
        """``fires`` come due soon: a gate may claim them now, so that :meth:`admit` need
        not wait for a claim when they do. Returns at once; the work goes on meanwhile."""

    def ran(self, fire: Fire) -> None:  # noqa: B027  (optional hook)
        """A run that :meth:`admit` let through has ended (whatever its outcome)."""

    def job_changed(self) -> None:  # noqa: B027  (optional hook)
        """A job changed in this process (on the loop): another process may need to know."""

    def poll_wait(self, wait: float | None) -> float | None:
        """The longest the wake-up loop may sleep, given that its next fire is ``wait``
        seconds away (None: none): other processes' changes may need a look sooner."""
        return wait


class OpenGate(FireGate):
    """Every fire runs: one process, or coordination turned off."""

    async def admit(self, fires: Sequence[Fire]) -> Collection[Fire]:
        return fires


OPEN_GATE = OpenGate()
