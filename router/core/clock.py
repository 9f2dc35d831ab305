"""Injected sources of time and identity, so that the core never reads them itself: the
protocols, and the deterministic ones (tests, replays, the bench). The system's own clock
and random ids are the runtime's defaults (``router.run.runtime``)."""

from __future__ import annotations

import itertools
from typing import Protocol, final

__all__ = ["Clock", "IdSource", "ManualClock", "SequentialIds"]


class Clock(Protocol):
    def now_us(self) -> int:
        """Wall-clock time in microseconds since the Unix epoch."""
        ...


class IdSource(Protocol):
    def new_id(self, prefix: str) -> str: ...


@final
class ManualClock:
    """A clock that moves only when told to (tests, replays, the bench)."""

    def __init__(self, start_us: int = 0, step_us: int = 0) -> None:
        self._now = start_us
        self._step = step_us

    def now_us(self) -> int:
        now = self._now
        self._now += self._step
        return now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1_000_000)


@final
class SequentialIds:
    """Predictable ids: prefix_1, prefix_2, ... (tests and the bench)."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counter)}"
