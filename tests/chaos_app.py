"""The application the chaos tests' worker processes serve: an agent whose tool charges a
card (not idempotent: every run of it is written to an external ledger), and a graph.
(Imported by chaos_worker.py and the tests, which run from tests/.)"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Sequence
from typing import Any

import anyio

from router import (
    END,
    Engine,
    Graph,
    GraphEngine,
    Message,
    ModelTurn,
    ProposedCall,
    Runtime,
    ToolContext,
    Tools,
    tool,
)

CHARGES = 3  # tool calls per agent run


def ledger(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS ledger (run_id TEXT, call_id TEXT, pid INTEGER)")
    return conn


class Cashier:
    """A model that asks for CHARGES charges, one a turn, then answers; it takes a moment.
    In a process started with CHAOS_FREEZE=1 its first answer freezes the process (SIGSTOP,
    as a GC pause or a partition would), in the middle of a run it holds."""

    name = "cashier"
    freeze = os.environ.get("CHAOS_FREEZE") == "1"

    async def respond(self, messages: Sequence[Message], tools: Sequence[Any]) -> ModelTurn:
        if Cashier.freeze:
            Cashier.freeze = False
            os.kill(os.getpid(), signal.SIGSTOP)
        await anyio.sleep(0.01)
        done = sum(1 for m in messages if m.role == "tool")
        if done >= CHARGES:
            return ModelTurn(text=f"charged {done} times")
        return ModelTurn(
            tool_calls=(ProposedCall(f"c{done}", "charge", f'{{"cents": {100 + done}}}'),)
        )


def definitions(runtime: Runtime, ledger_path: str) -> list[Any]:
    book = ledger(ledger_path)

    @tool()  # not idempotent: a second run of one call would charge twice
    async def charge(cents: int, context: ToolContext) -> str:
        """Charge the customer's card."""
        book.execute(
            "INSERT INTO ledger VALUES (?, ?, ?)", (context.run_id, context.call_id, os.getpid())
        )
        await anyio.sleep(0.005)
        return f"charged {cents}"

    async def add_one(state: dict[str, Any]) -> dict[str, Any]:
        await anyio.sleep(0.01)
        return {"n": state["n"] + 1}

    g = Graph("counter")
    g.add_node("one", add_one)
    g.add_node("two", add_one)
    g.add_node("three", add_one)
    g.start("one")
    g.edge("one", "two")
    g.edge("two", "three")
    g.edge("three", END)
    return [
        Engine(runtime, Cashier(), Tools([charge]), agent="cashier"),
        GraphEngine(runtime, g.compile()),
    ]
