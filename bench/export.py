"""export: write a log of 100,000 events to Parquet and verify the file, each in a fresh
process, reporting time per event and the process's peak memory (it must stay flat)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from router.core.chain import Chain
from router.core.events import ModelResponded, ToolCall, ToolStarted, ToolSucceeded, Usage
from router.store.sqlite_schema import INSERT as _INSERT
from router.store.sqlite_schema import SCHEMA as _SCHEMA

from .measure import Record, record
from .peers import Samples
from .system import VERSION

# Each child prints its result and its own peak resident memory (VmHWM, which exec resets;
# the parent's rusage of children would count the parent's pages copied at fork).
PEAK = "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
EXPORT = f"""
import anyio, sys
from router import SqliteStore
from router.export.arrow import export
async def main():
    async with SqliteStore.open(sys.argv[1]) as store:
        print((await export(store, sys.argv[2])).events)
anyio.run(main)
{PEAK}
"""
VERIFY = (
    "import sys; from router.export.arrow import verify_export; "
    f"print(verify_export([sys.argv[1]]).events)\n{PEAK}"
)


def build_log(path: Path, events: int) -> None:
    """A log of ``events`` events: runs of 100 events of a realistic shape."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN")
    for _ in range(events // 99):
        chain = Chain(f"run_{uuid.uuid4().hex[:16]}")
        batch = []
        for step in range(33):
            call = ToolCall(
                id=f"call_{step}_0", name="lookup", arguments=f'{{"customer_id": {step}}}'
            )
            batch += [
                ModelResponded(
                    at=step,
                    step=step + 1,
                    tool_calls=(call,),
                    usage=Usage(input_tokens=900, output_tokens=40),
                    cost_nusd=3300000,
                    model="gpt-4o",
                    latency_us=800_000,
                ),
                ToolStarted(
                    at=step,
                    call_id=call.id,
                    tool="lookup",
                    arguments=call.arguments,
                    idempotent=True,
                ),
                ToolSucceeded(
                    at=step,
                    call_id=call.id,
                    tool="lookup",
                    result='{"name": "Grace", "plan": "pro"}',
                    latency_us=1200,
                ),
            ]
        sealed = chain.seal(batch)
        conn.executemany(
            _INSERT, [(e.run_id, e.seq, e.kind, e.payload, e.prev_hash, e.hash) for e in sealed]
        )
    conn.execute("COMMIT")
    conn.close()


def _child(code: str, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS of the child in MB, its result line)."""
    begin = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout
    elapsed = time.perf_counter() - begin
    result, peak_kb = out.split()
    return elapsed, int(peak_kb) / 1024, result


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    events = 20_000 if quick else 100_000
    log, out = tmp / "export-log.db", tmp / "export.parquet"
    build_log(log, events)
    seconds, peak, written = _child(EXPORT, str(log), str(out))
    verify_seconds, verify_peak, verified = _child(VERIFY, str(out))
    assert int(written) == int(verified) >= events - 99, (written, verified)
    n = int(written)
    size = out.stat().st_size
    exported = record(
        "export",
        "router",
        VERSION,
        "parquet",
        Samples([seconds * 1e6 / n]),
        f"{n} events in {seconds:.1f} s, peak RSS {peak:.0f} MB, file {size / n:.0f} B/event",
        unit="us/event",
    )
    exported.peak_rss_mb = round(peak, 1)
    checked = record(
        "export",
        "router",
        VERSION,
        "verify",
        Samples([verify_seconds * 1e6 / n]),
        f"verify the Parquet file alone: {verify_seconds:.1f} s, peak RSS {verify_peak:.0f} MB",
        unit="us/event",
    )
    checked.peak_rss_mb = round(verify_peak, 1)
    return [exported, checked]
