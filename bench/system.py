"""router's side of every workload: the shared fake model and tool, stores, timing.

The fake model and the tool are the ones in bench/peers/__init__.py, so that router and
its peers do the same work: on model turn k the model proposes add(a=k, b=1) (or
``calls`` such calls at once) while k < steps, then answers "done".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import router
from router import (
    Engine,
    Limits,
    MemoryStore,
    Message,
    ModelTurn,
    Principal,
    ProposedCall,
    Runtime,
    SqliteStore,
    Tools,
    tool,
)
from router.core.protocols import current_run_id
from router.store.sqlite import Durability

from . import postgres
from .peers import fake_turn

__all__ = [
    "USER",
    "VERSION",
    "FakeModel",
    "open_store",
    "postgres_kinds",
    "router_engine",
    "time_runs",
    "write_transactions",
]

USER = Principal(id="bench", roles=frozenset({"bench"}))
VERSION = router.__version__

PROMISES = {
    "memory": "nothing survives the process",
    "commit": "committed before each side effect; survives kill -9, not power loss",
    "group": "as commit; runs of one loop turn share a commit",
    "fsync": "fsynced before each side effect; survives power loss",
    "group_fsync": "as fsync; concurrent runs share an fsync",
    "postgres": "committed on PostgreSQL (fsync on) before each side effect; survives power loss",
}


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = Tools([add])


class FakeModel:
    """The shared zero-latency model. When ``record`` is set, ``marks`` maps each run to the
    perf_counter_ns of its turns (for per-step times inside a run; one model serves many
    runs at once, as one engine does in a service)."""

    # Answers depend only on (steps, calls, turn): built once per process, not per run.
    _answers: dict[tuple[int, int, int], ModelTurn] = {}

    def __init__(self, steps: int, calls: int = 1, *, record: bool = False) -> None:
        self.name = "fake"
        self.steps, self.calls = steps, calls
        self.record = record
        self.marks: dict[str, list[int]] = {}

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        if self.record:
            self.marks.setdefault(current_run_id.get(), []).append(time.perf_counter_ns())
        key = (self.steps, self.calls, _turn_of(messages))
        cached = self._answers.get(key)
        if cached is None:
            answer = fake_turn(key[2], self.steps, self.calls)
            if isinstance(answer, str):
                cached = ModelTurn(text=answer)
            else:
                cached = ModelTurn(
                    tool_calls=tuple(
                        ProposedCall(str(c["id"]), str(c["name"]), _args(c["args"])) for c in answer
                    )
                )
            self._answers[key] = cached
        return cached


def _args(args: object) -> str:
    assert isinstance(args, dict)
    return "{" + ", ".join(f'"{k}": {v}' for k, v in args.items()) + "}"


def _turn_of(messages: Sequence[Message]) -> int:
    """The model turns taken so far. After the opening message, the conversation ends with
    the results of the last turn's calls, whose ids are call_<turn>_<i>."""
    last = messages[-1]
    return int(last.call_id.split("_")[1]) + 1 if last.role == "tool" else 0


def postgres_kinds() -> tuple[str, ...]:
    """("postgres",) where the bench can start a PostgreSQL server and asyncpg is installed."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return ()
    return ("postgres",) if postgres.shared() is not None else ()


async def open_store(kind: str, tmp: Path) -> Any:
    """A fresh store: each SQLite store gets a new file and each PostgreSQL store a new
    database on the bench's server, so sizes measure one workload."""
    if kind == "memory":
        return MemoryStore()
    if kind == "postgres":
        from router.store.postgres import PostgresStore

        server = postgres.shared()
        assert server is not None, "no PostgreSQL server: check postgres_kinds() first"
        return await PostgresStore.open(server.new_database("router"))
    return await SqliteStore.open(
        tmp / f"router-{kind}-{uuid.uuid4().hex[:8]}.db", Durability(kind)
    )


def write_transactions(store: Any) -> int:
    """Write transactions so far: the SQLite store's own count of commits, or on PostgreSQL
    the server's count of transaction ids assigned (every system's writes, so read it only
    around one system's work)."""
    if isinstance(store, SqliteStore):
        return store.commits
    if isinstance(store, MemoryStore):
        return 0
    server = postgres.shared()
    assert server is not None
    return server.next_xid()


def router_engine(store: Any, model: Any) -> Engine:
    """An engine with router's default protections on (loop detector, rejection bound)
    and budgets wide enough for the longest workload."""
    return Engine(
        Runtime(store, owner="bench"),
        model,
        TOOLS,
        limits=Limits(max_steps=100_000, max_tool_calls=1_000_000),
    )


async def time_runs(engine: Engine, runs: int, steps: int) -> list[float]:
    """Per-step microseconds of ``runs`` whole runs (run time / model turns)."""
    per_step: list[float] = []
    for _ in range(runs):
        begin = time.perf_counter_ns()
        result = await engine.start("add them", principal=USER)
        elapsed = time.perf_counter_ns() - begin
        assert result.phase == "done" and result.steps == steps + 1, result
        per_step.append(elapsed / 1000 / result.steps)
    return per_step
