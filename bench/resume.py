"""resume: continue a 500-step run from its SQLite log (read, verify the chain, decode,
fold, rebuild the conversation), to its answer: one more model step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router import Message, ModelTurn

from .measure import Record, record, settle
from .peers import Samples
from .system import USER, VERSION, FakeModel, open_store, router_engine

STEPS = 500


class _Crash(BaseException):
    """Stands for the process dying mid-run."""


class _DiesAt(FakeModel):
    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        turn = await super().respond(messages, tools)
        if not turn.tool_calls:
            raise _Crash
        return turn


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    runs = 5 if quick else 20
    store = await open_store("commit", tmp)
    ids = []
    for i in range(runs):
        try:
            await router_engine(store, _DiesAt(STEPS)).start(
                "add them", principal=USER, run_id=f"resume-{i}"
            )
        except _Crash:
            ids.append(f"resume-{i}")
            await store.release_lease(f"resume-{i}", "bench")
    settle()
    times = []
    events = len(await store.read(ids[0]))
    for run_id in ids:
        begin = time.perf_counter_ns()
        result = await router_engine(store, FakeModel(STEPS)).resume(run_id)
        times.append((time.perf_counter_ns() - begin) / 1000)
        assert result.phase == "done" and result.steps == STEPS + 1, result
    await store.aclose()
    rec = record(
        "resume",
        "router",
        VERSION,
        "commit",
        Samples(times),
        f"to resume a {STEPS}-step run ({events} events) and finish it",
        unit="us",
    )
    return [rec]
