"""long_run: one run of 500 tool steps. Per-step cost must stay flat; storage per step is
reported where the store persists (LangGraph's checkpoints hold the whole state)."""

from __future__ import annotations

import statistics
from pathlib import Path

from .measure import COMPARABLE, Record, compare, peer_kinds, record, settle
from .peers import Peer, Samples, stored_bytes
from .system import (
    PROMISES,
    USER,
    VERSION,
    FakeModel,
    open_store,
    router_engine,
    write_transactions,
)

STEPS = 500


def _flatness(per_step: list[float]) -> str:
    first, last = statistics.median(per_step[:100]), statistics.median(per_step[-100:])
    return f"first 100 steps {first:.1f} us, last 100 {last:.1f} us: x{last / first:.2f}"


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    records = []
    for kind in ("memory", "commit"):
        settle()
        store = await open_store(kind, tmp)
        model = FakeModel(STEPS, record=True)
        engine = router_engine(store, model)
        result = await engine.start("add them", principal=USER)
        assert result.steps == STEPS + 1, result
        marks = model.marks[result.run_id]
        per_step = [(b - a) / 1000 for a, b in zip(marks, marks[1:], strict=False)]
        commits = write_transactions(store) / result.steps
        await store.aclose()
        size = stored_bytes(Path(store.path)) / result.steps if kind != "memory" else None  # type: ignore[union-attr]
        samples = Samples(per_step, commits_per_step=commits, bytes_per_step=size)
        records.append(
            record(
                "long_run",
                "router",
                VERSION,
                kind,
                samples,
                f"{PROMISES[kind]}; {_flatness(per_step)}",
            )
        )
    for peer in peers:
        for kind in peer_kinds(peer, ("memory", "commit"), COMPARABLE):
            if quick and kind == "memory":
                continue
            settle()
            per_step = peer.long_run(kind, steps=STEPS, tmp=tmp)
            size = getattr(peer, "last_bytes_per_step", None)
            records.append(
                record(
                    "long_run",
                    peer.system,
                    peer.version,
                    kind,
                    Samples(per_step, bytes_per_step=size),
                    _flatness(per_step),
                )
            )
    compare(records, COMPARABLE)
    return records
