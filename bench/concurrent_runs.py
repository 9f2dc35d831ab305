"""concurrent_runs: 1,000 runs of 10 tool steps in flight on one event loop, sharing one
SQLite file: durable steps per second, and each step's latency (p50, p99)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

from router import Engine

from .measure import Record, peak_rss_mb, percentile, settle
from .system import PROMISES, USER, VERSION, FakeModel, open_store, router_engine

STEPS = 10


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    runs = 200 if quick else 1000
    records = []
    for kind in ("memory", "commit", "group", "group_fsync"):
        settle()
        store = await open_store(kind, tmp)
        model = FakeModel(STEPS, record=True)
        engine = router_engine(store, model)  # one engine serves every run, as in a service

        async def one(engine: Engine) -> None:
            result = await engine.start("add them", principal=USER)
            assert result.steps == STEPS + 1, result

        before = getattr(store, "commits", 0)
        begin = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(runs):
                tg.start_soon(one, engine)
        elapsed = time.perf_counter() - begin
        commits = getattr(store, "commits", 0) - before
        await store.aclose()
        steps = runs * (STEPS + 1)
        latencies = sorted(
            (b - a) / 1000
            for marks in model.marks.values()
            for a, b in zip(marks, marks[1:], strict=False)
        )
        checkpoints = getattr(store, "checkpoints", 0)
        records.append(
            Record(
                workload="concurrent_runs",
                system="router",
                version=VERSION,
                store=kind,
                p50_us_per_step=round(percentile(latencies, 50), 1),
                p99_us_per_step=round(percentile(latencies, 99), 1),
                steps_per_s=round(steps / elapsed),
                peak_rss_mb=round(peak_rss_mb(), 1),
                commits_per_step=round(commits / steps, 3),
                samples=len(latencies),
                note=f"{runs} runs in flight; step latency as each run sees it; {PROMISES[kind]}"
                + (f"; {checkpoints} WAL checkpoints during the run" if kind != "memory" else ""),
            )
        )
    return records
