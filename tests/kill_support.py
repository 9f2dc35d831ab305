"""What the child processes of the kill tests share: markers the parent answers, and a
store that marks each commit. (Imported by the child scripts, which run from tests/.)"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from router import SqliteStore


def marker(text: str) -> None:
    """Say where the child is and wait for the parent's "go" (or be killed here)."""
    print(text, flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)


class Observed:
    """The real store, with a marker after each commit."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    async def append(self, events: Sequence[Any], *, fence: Any = None) -> int:
        token = await self.inner.append(events, fence=fence)
        marker(f"committed {events[0].run_id} {events[-1].seq}")
        return token

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
