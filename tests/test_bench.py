"""The bench suite runs and writes the records it promises (it times; tests do not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "workload", "system", "version", "store", "p50_us_per_step", "p99_us_per_step", "steps_per_s",
    "peak_rss_mb", "commits_per_step",
}


def test_a_quick_bench_run_writes_its_records(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peers", "--only", "validation", "--only", "long_run",
         "--json", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    records = json.loads(out.read_text())
    assert {(r["workload"], r["store"]) for r in records} >= {("validation", "-"), ("long_run", "commit")}
    for r in records:
        assert FIELDS <= set(r), r
    durable = next(r for r in records if r["workload"] == "long_run" and r["store"] == "commit")
    assert durable["bytes_per_step"] > 0 and durable["commits_per_step"] > 0


def test_the_readme_table_is_the_committed_results() -> None:
    table = subprocess.run(
        [sys.executable, "-m", "bench", "--markdown", "bench/results/bench.json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert table in (ROOT / "README.md").read_text()
