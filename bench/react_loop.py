"""react_loop: 10 tool steps and a final answer (11 model turns), zero-latency model.

router on every store (PostgreSQL where the bench can start a server) against every
installed peer on every store, interleaved.
"""

from __future__ import annotations

from pathlib import Path

from .measure import COMPARABLE, Record, compare, interleave, peer_kinds, record
from .peers import WARMUP_RUNS, Peer, Samples
from .system import (
    PROMISES,
    VERSION,
    FakeModel,
    open_store,
    postgres_kinds,
    router_engine,
    time_runs,
    write_transactions,
)

STEPS = 10
ROUTER_STORES = ("memory", "commit", "group", "fsync", "group_fsync")
SLOW_STORES = ("fsync", "group_fsync", "postgres")  # measured over fewer runs


async def router_contestant(kind: str, tmp: Path, steps: int, calls: int = 1):  # type: ignore[no-untyped-def]
    store = await open_store(kind, tmp)
    engine = router_engine(store, FakeModel(steps, calls))
    await time_runs(engine, 5, steps)  # warm up

    async def measure(n: int) -> Samples:
        await time_runs(engine, WARMUP_RUNS, steps)  # as each peer does at the start of its slot
        before = write_transactions(store)
        per_step = await time_runs(engine, n, steps)
        commits = (write_transactions(store) - before) / (n * (steps + 1))
        return Samples(per_step_us=per_step, commits_per_step=commits)

    return store, measure


def peer_contestant(peer: Peer, store: str, tmp: Path, steps: int):  # type: ignore[no-untyped-def]
    async def measure(n: int) -> Samples:
        return peer.react_loop(store, steps=steps, runs=n, tmp=tmp)

    return measure


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    runs = 40 if quick else 300
    contestants = {}
    stores = []
    kinds = ROUTER_STORES + postgres_kinds()
    for kind in kinds:
        store, measure = await router_contestant(kind, tmp, STEPS)
        stores.append(store)
        contestants[("router", VERSION, kind)] = measure
    for peer in peers:
        for kind in peer_kinds(peer, kinds, COMPARABLE):
            contestants[(peer.system, peer.version, kind)] = peer_contestant(peer, kind, tmp, STEPS)
    slow = {key for key in contestants if key[0] != "router" or key[2] in SLOW_STORES}
    fast_runs, slow_runs = runs, max(10, runs // 3)
    results = await interleave({k: v for k, v in contestants.items() if k not in slow}, fast_runs)
    results |= await interleave({k: v for k, v in contestants.items() if k in slow}, slow_runs)
    for store in stores:
        await store.aclose()
    records = [
        record(
            "react_loop",
            system,
            version,
            kind,
            results[(system, version, kind)],
            PROMISES.get(kind, "") if system == "router" else "",
        )
        for (system, version, kind) in contestants
    ]
    compare(records, COMPARABLE)
    return records
