"""cold_start: a new process that imports router, and one that also runs a first
10-step run in memory. Milliseconds of wall time, median of several processes, with
bytecode cached (as pip leaves an installed package)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from .measure import Record, record
from .peers import Samples
from .system import VERSION

FIRST_RUN = """
import anyio
from bench.system import FakeModel, USER, router_engine
from router import MemoryStore
async def main():
    result = await router_engine(MemoryStore(), FakeModel(10)).start("go", principal=USER)
    assert result.phase == "done"
anyio.run(main)
"""


def _wall_ms(code: str, n: int) -> list[float]:
    """Wall time of new processes, with bytecode cached as in a deployed service (the first,
    untimed process writes it)."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
    out = []
    for _ in range(n):
        begin = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)
        out.append((time.perf_counter_ns() - begin) / 1e6)
    return out


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    n = 3 if quick else 10
    base = _wall_ms("pass", n)
    imported = _wall_ms("import router", n)
    first = _wall_ms(FIRST_RUN, n)
    interpreter = sorted(base)[len(base) // 2]
    return [
        record(
            "cold_start",
            "router",
            VERSION,
            "-",
            Samples([t - interpreter for t in imported]),
            f"import router, beyond the bare interpreter ({interpreter:.0f} ms)",
            unit="ms",
        ),
        record(
            "cold_start",
            "router",
            VERSION,
            "memory",
            Samples([t - interpreter for t in first]),
            "import router and finish a first 10-step run, beyond the bare interpreter",
            unit="ms",
        ),
    ]
