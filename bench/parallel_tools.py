"""parallel_tools: 3 model turns that each propose 8 add calls at once, then an answer;
router in memory, on SQLite and on PostgreSQL against each peer's comparable store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .measure import Record, head_to_head
from .peers import Peer
from .system import USER, FakeModel, postgres_kinds, router_engine

CALLS, TURNS = 8, 3


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    def one_run(store: Any) -> Callable[[], Awaitable[Any]]:
        engine = router_engine(store, FakeModel(TURNS, CALLS))
        return lambda: engine.start("add them", principal=USER)

    def check(result: Any) -> None:
        assert result.tool_calls == CALLS * TURNS and result.steps == TURNS + 1, result

    return await head_to_head(
        "parallel_tools",
        one_run=one_run,
        check=check,
        steps=TURNS + 1,
        peers=peers,
        method="parallel_tools",
        peer_options={"calls": CALLS, "turns": TURNS},
        runs=30 if quick else 200,
        tmp=tmp,
        kinds=("memory", "commit", *postgres_kinds()),
    )
