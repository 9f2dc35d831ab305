"""concurrent_runs: 1,000 runs of 10 tool steps in flight at once: durable steps per second,
and each step's latency as its run sees it (p50, p99).

In one process on one event loop, one engine serving every run as in a service: router on
each store (one SQLite file, or a database of the bench's PostgreSQL server), and LangGraph
on its PostgresSaver on the same server. Then four processes at once on one log, a quarter
of the runs each, as replicas of a service share it: on one SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from router import Engine, SqliteStore
from router.store.open import open_store as open_location
from router.store.sqlite import Durability

from . import postgres
from .measure import Record, peak_rss_mb, percentile, settle
from .peers import Peer
from .system import (
    PROMISES,
    USER,
    VERSION,
    FakeModel,
    open_store,
    postgres_kinds,
    router_engine,
    write_transactions,
)

STEPS = 10
PROCESSES = 4


class Measured(msgspec.Struct):
    """One set of runs in flight: when it began and ended (time.monotonic, shared by the
    machine's processes), each step's latency in microseconds, and the store's commits."""

    begin: float
    end: float
    latencies: list[float]
    commits: int


async def _in_flight(engine: Engine, model: FakeModel, store: Any, runs: int) -> Measured:
    async def one() -> None:
        result = await engine.start("add them", principal=USER)
        assert result.steps == STEPS + 1, result

    before = write_transactions(store) if isinstance(store, SqliteStore) else 0
    begin = time.monotonic()
    async with anyio.create_task_group() as tg:
        for _ in range(runs):
            tg.start_soon(one)
    end = time.monotonic()
    commits = write_transactions(store) - before if isinstance(store, SqliteStore) else 0
    latencies = [
        (b - a) / 1000 for marks in model.marks.values() for a, b in itertools.pairwise(marks)
    ]
    return Measured(begin, end, latencies, commits)


def _record(
    store: str,
    latencies: list[float],
    steps_per_s: float,
    commits: float,
    note: str,
    *,
    system: str = "router",
    version: str = VERSION,
) -> Record:
    return Record(
        workload="concurrent_runs",
        system=system,
        version=version,
        store=store,
        p50_us_per_step=round(percentile(latencies, 50), 1),
        p99_us_per_step=round(percentile(latencies, 99), 1),
        steps_per_s=round(steps_per_s),
        peak_rss_mb=round(peak_rss_mb(), 1),
        commits_per_step=round(commits, 3),
        samples=len(latencies),
        note=note,
    )


async def _one_process(kind: str, runs: int, tmp: Path) -> Record:
    settle()
    store = await open_store(kind, tmp)
    model = FakeModel(STEPS, record=True)
    engine = router_engine(store, model)  # one engine serves every run, as in a service
    before = write_transactions(store)
    got = await _in_flight(engine, model, store, runs)
    commits = write_transactions(store) - before
    await store.aclose()
    steps = runs * (STEPS + 1)
    checkpoints = getattr(store, "checkpoints", None)
    note = f"{runs} runs in flight; step latency as each run sees it; {PROMISES[kind]}"
    if checkpoints is not None:
        note += f"; {checkpoints} WAL checkpoints during the run"
    return _record(kind, got.latencies, steps / (got.end - got.begin), commits / steps, note)


async def _processes(location: str, store: str, runs: int) -> Record:
    """``PROCESSES`` processes, each with ``runs / PROCESSES`` runs in flight on the log at
    ``location``, started together once every one has opened the log and warmed up."""
    command = [sys.executable, "-m", "bench.concurrent_runs", location, str(runs // PROCESSES)]
    cwd = Path(__file__).resolve().parents[1]
    children = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
        for _ in range(PROCESSES)
    ]
    server = postgres.shared() if store == "postgres" else None
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    before = server.next_xid() if server is not None else 0
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
    outputs = [c.stdout.read() for c in children if c.stdout is not None]
    for child in children:
        child.wait()
    measured = [msgspec.json.decode(out, type=Measured) for out in outputs]
    assert all(c.returncode == 0 for c in children)
    steps = PROCESSES * (runs // PROCESSES) * (STEPS + 1)
    commits = server.next_xid() - before if server is not None else sum(m.commits for m in measured)
    elapsed = max(m.end for m in measured) - min(m.begin for m in measured)
    latencies = [x for m in measured for x in m.latencies]
    note = (
        f"{PROCESSES} processes on one log, {runs // PROCESSES} runs in flight in each; "
        f"steps/s of them all together; {PROMISES[store]}"
    )
    return _record(f"{store} x{PROCESSES}", latencies, steps / elapsed, commits / steps, note)


async def _peer(peer: Any, runs: int) -> Record:
    settle()
    got = await peer.concurrent_runs("postgres", runs=runs, steps=STEPS)
    note = f"{runs} runs in flight (ainvoke); AsyncPostgresSaver on a pool of 10 connections"
    return _record(
        "postgres",
        got.latencies_us,
        got.steps_per_s,
        got.commits_per_step,
        note,
        system=peer.system,
        version=peer.version,
    )


async def run(quick: bool, peers: list[Peer], tmp: Path) -> list[Record]:
    runs = 200 if quick else 1000
    on_postgres = postgres_kinds()
    records = [
        await _one_process(kind, runs, tmp)
        for kind in ("memory", "commit", "group", "group_fsync", *on_postgres)
    ]
    for peer in peers:
        if on_postgres and "postgres" in peer.stores and hasattr(peer, "concurrent_runs"):
            records.append(await _peer(peer, runs))
    records.append(await _processes(str(tmp / "concurrent-x4.db"), "commit", runs))
    if on_postgres:
        server = postgres.shared()
        assert server is not None
        records.append(await _processes(server.new_database("router_x4"), "postgres", runs))
    return records


async def _serve(location: str, runs: int) -> None:
    """One of the processes: open the log, warm up, say ready, wait for go, run, report."""
    options = {} if "://" in location else {"durability": Durability.COMMIT}
    async with open_location(location, **options) as store:
        engine = router_engine(store, FakeModel(STEPS))
        for _ in range(3):
            await engine.start("add them", principal=USER)
        model = FakeModel(STEPS, record=True)
        engine = router_engine(store, model)
        print("ready", flush=True)
        sys.stdin.readline()
        measured = await _in_flight(engine, model, store, runs)
    sys.stdout.buffer.write(msgspec.json.encode(measured))


if __name__ == "__main__":
    anyio.run(_serve, sys.argv[1], int(sys.argv[2]), backend_options={"use_uvloop": True})
