"""Peers behind one interface, so every system runs the same workload the same way.

A peer is installed by the ``peers`` extra (``pip install -e ".[peers]"``). Each peer
module exposes ``PEERS: list[Peer]``; a peer whose package is missing is skipped.

The shared workload, for every system:
- a zero-latency fake model: on model turn k (k = 0, 1, ...) it proposes the tool call
  ``add(a=k, b=1)`` while k < steps (or, for parallel_tools, ``calls`` such calls at once),
  and answers with the text "done" at turn ``steps``;
- one tool, ``add(a: int, b: int) -> int``;
- a "step" is one model turn, so a react_loop of 10 tool steps has 11 steps.
Times are wall-clock per run divided by the run's steps, in microseconds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

__all__ = [
    "WARMUP_RUNS",
    "Backend",
    "Peer",
    "Samples",
    "add",
    "count_commits",
    "expected_results",
    "fake_turn",
    "stored_bytes",
]

# Every system, router and each peer, runs this many untimed runs at the start of each
# measured slot of an interleaved comparison, so that none is timed cold after another
# system has had the caches.
WARMUP_RUNS = 2


class Samples(msgspec.Struct):
    per_step_us: list[float]  # one value per run: the run's time divided by its steps
    commits_per_step: float = 0.0  # write transactions per step, where the peer persists
    bytes_per_step: float | None = None  # stored bytes per step, where measured


class Peer(Protocol):
    system: str  # e.g. "langgraph-plain"
    version: str  # the peer package's version
    stores: tuple[str, ...]  # e.g. ("none", "memory", "sqlite")

    def react_loop(self, store: str, *, steps: int, runs: int, tmp: Path) -> Samples:
        """``runs`` runs of ``steps`` tool steps and a final answer, each from a fresh
        thread/state."""
        ...

    def parallel_tools(
        self, store: str, *, calls: int, turns: int, runs: int, tmp: Path
    ) -> Samples:
        """``runs`` runs of ``turns`` model turns that each propose ``calls`` add calls at once."""
        ...

    def long_run(self, store: str, *, steps: int, tmp: Path) -> list[float]:
        """One run of ``steps`` tool steps: the time of each step in microseconds, in order.
        Where the store persists, the peer also records ``bytes_per_step`` on
        ``self.last_bytes_per_step``."""
        ...


def add(a: int, b: int) -> int:
    return a + b


def fake_turn(turn: int, steps: int, calls: int = 1) -> list[dict[str, object]] | str:
    """The fake model's answer on ``turn``: tool calls as dicts (id, name, args), or the final
    text."""
    if turn >= steps:
        return "done"
    return [
        {"id": f"call_{turn}_{i}", "name": "add", "args": {"a": turn, "b": 1 + i}}
        for i in range(calls)
    ]


def stored_bytes(path: Path) -> int:
    """The size of a SQLite database once its WAL is checkpointed into it: what it stores,
    not how much WAL it has not yet folded in."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


def expected_results(steps: int, calls: int) -> list[int]:
    """What the shared workload's add calls return, in order."""
    return [turn + 1 + i for turn in range(steps) for i in range(calls)]


class _WriteTransactions:
    """A ``sqlite3`` trace callback that counts write transactions: every COMMIT, plus
    INSERT/UPDATE/REPLACE/DELETE statements outside an explicit transaction (each is its own
    autocommit transaction). The trace gets the SQL with its parameters expanded, so it is
    only installed for an untimed counting run."""

    def __init__(self) -> None:
        self.count = 0
        self._in_txn = False

    def __call__(self, sql: str) -> None:
        head = sql[:16].lstrip().upper()
        if head.startswith("BEGIN"):
            self._in_txn = True
        elif head.startswith(("COMMIT", "END")):
            self.count += 1
            self._in_txn = False
        elif head.startswith("ROLLBACK"):
            self._in_txn = False
        elif not self._in_txn and head.startswith(("INSERT", "UPDATE", "REPLACE", "DELETE")):
            self.count += 1


def count_commits(conn: sqlite3.Connection | None, run: Callable[[], object]) -> float:
    """Write transactions that one call of ``run`` makes on ``conn`` (0 without a connection)."""
    if conn is None:
        run()
        return 0.0
    counter = _WriteTransactions()
    conn.set_trace_callback(counter)
    try:
        run()
    finally:
        conn.set_trace_callback(None)
    return float(counter.count)


@dataclass
class Backend:
    """A peer's persistence for one store name (its checkpointer or persister, or None) and
    the SQLite file behind it, if any; on PostgreSQL, ``xids`` reads the server's next
    transaction id (bench/postgres.py), by which its write transactions are counted."""

    saver: Any
    conn: sqlite3.Connection | None = None
    path: Path | None = None
    xids: Callable[[], int] | None = None

    def file_bytes(self) -> int:
        """What the database stores, its WAL checkpointed."""
        assert self.path is not None
        return stored_bytes(self.path)

    def count_commits(self, run: Callable[[], object]) -> float:
        """Write transactions made by one call of ``run`` (0 where nothing persists)."""
        if self.xids is not None:
            before = self.xids()
            run()
            return float(self.xids() - before)
        return count_commits(self.conn, run)
