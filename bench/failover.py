"""failover: a worker process is SIGKILLed in the middle of a run; how long until the run's
next event, written by another worker that took it over (default lease and poll settings:
the time is mostly the dead worker's lease running out). One SQLite file shared by the
processes; each victim holds one run when it is killed, and one rescuer takes them all."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from router import (
    Engine,
    Limits,
    Message,
    ModelTurn,
    ProposedCall,
    Runtime,
    SqliteStore,
    Tools,
    tool,
)

from .measure import Record, record
from .peers import Samples
from .system import USER, VERSION

TURNS = 10_000  # a run far longer than the measurement: it is always mid-run


class Plodder:
    """A model that takes a tenth of a second a turn and never finishes."""

    name = "plodder"

    async def respond(self, messages: Sequence[Message], tools: Sequence[Any]) -> ModelTurn:
        await anyio.sleep(0.1)
        done = sum(1 for m in messages if m.role == "tool")
        return ModelTurn(tool_calls=(ProposedCall(f"c{done}", "tick", f'{{"n": {done}}}'),))


@tool(inline=True, idempotent=True)
def tick(n: int) -> int:
    """Count."""
    return n


def definitions(runtime: Runtime) -> list[Engine]:
    """The application the workers serve (``router worker --app bench.failover:definitions``)."""
    limits = Limits(max_steps=TURNS, max_tool_calls=TURNS)
    return [Engine(runtime, Plodder(), Tools([tick]), agent="plodder", limits=limits)]


def _worker(db: Path, concurrency: int) -> tuple[subprocess.Popen[str], str]:
    """A ``router worker`` process with the default lease and poll settings, and its owner."""
    args = ["worker", "--db", str(db), "--app", "bench.failover:definitions"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", *args, "--concurrency", str(concurrency)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.stderr is not None
    owner = proc.stderr.readline().split()[1]  # "worker OWNER on DB"
    assert proc.stderr.readline().strip() == "ready"
    return proc, owner


def _query(db: Path, sql: str, *args: Any) -> list[Any]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    kills = 5 if quick else 20
    db = tmp / "failover.db"
    async with SqliteStore.open(db) as store:
        (engine,) = definitions(Runtime(store))
        for i in range(kills):
            await engine.start("go", principal=USER, run_id=f"f{i}", drive=False)
    victims = [_worker(db, 1) for _ in range(kills)]
    rescuer, _ = _worker(db, kills)
    try:
        owners = {o for _, o in victims}
        while len(_query(db, "SELECT 1 FROM leases WHERE owner != ''")) < kills:
            await anyio.sleep(0.01)  # each victim holds its run
        held = dict(_query(db, "SELECT owner, run_id FROM leases WHERE owner != ''"))
        assert set(held) == owners, "the rescuer took a run before the kills"
        killed: dict[str, tuple[float, int]] = {}
        for proc, owner in victims:
            proc.send_signal(signal.SIGKILL)
            at = time.perf_counter()
            proc.wait()
            (last,) = _query(db, "SELECT max(seq) FROM events WHERE run_id = ?", held[owner])[0]
            killed[held[owner]] = (at, last)
        took: dict[str, float] = {}
        with anyio.fail_after(120):
            while len(took) < kills:
                for run_id, (at, last) in killed.items():
                    if run_id not in took and _query(
                        db, "SELECT 1 FROM events WHERE run_id = ? AND seq > ?", run_id, last
                    ):
                        took[run_id] = (time.perf_counter() - at) * 1e6
                await anyio.sleep(0.01)
    finally:
        for proc, _ in victims:
            if proc.poll() is None:
                proc.kill()
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait()
        for proc, _ in [*victims, (rescuer, "")]:
            if proc.stderr is not None:
                proc.stderr.close()
    return [
        record(
            "failover",
            "router",
            VERSION,
            "commit",
            Samples(sorted(took.values())),
            f"from a worker's SIGKILL to its run's next event on another worker, {kills} kills "
            f"(max {max(took.values()) / 1e6:.1f} s; lease 6 s, poll 1 s)",
            unit="us",
        )
    ]
