"""The bench suite runs and writes the records it promises (it times; tests do not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {
    "workload",
    "system",
    "version",
    "store",
    "p50_us_per_step",
    "p99_us_per_step",
    "steps_per_s",
    "peak_rss_mb",
    "commits_per_step",
}


def test_a_quick_bench_run_writes_its_records(tmp_path: Path) -> None:
    out = tmp_path / "records.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--no-peers",
            "--only",
            "validation",
            "--only",
            "long_run",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    records = json.loads(out.read_text())
    assert {(r["workload"], r["store"]) for r in records} >= {
        ("validation", "-"),
        ("long_run", "commit"),
    }
    for r in records:
        assert FIELDS <= set(r), r
    durable = next(r for r in records if r["workload"] == "long_run" and r["store"] == "commit")
    assert durable["bytes_per_step"] > 0 and durable["commits_per_step"] > 0


def test_the_readme_table_is_the_committed_results() -> None:
    table = subprocess.run(
        [sys.executable, "-m", "bench", "--markdown", "bench/results/bench.json"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert table in (ROOT / "README.md").read_text()


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    # the smallest run, should a refusal ever fail to happen
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peers", "--only", "validation", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text('[{"workload": 1}]')
    for args, why in [
        (["--markdown", str(tmp_path / "missing.json")], "not a results file"),
        (["--markdown", str(garbage)], "not a results file"),
        (["--json", str(tmp_path / "no" / "such" / "dir.json")], "no directory"),
        (["--json", str(tmp_path)], "is a directory"),
        (["--only", "no_such_workload"], "invalid choice"),
    ]:
        done = _bench(*args)
        assert done.returncode == 2 and why in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.json"]  # nothing was written


def test_a_failing_workload_is_named_and_the_others_are_still_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import __main__ as runner
    from bench.measure import Record

    def in_own_process(name: str, quick: bool, no_peers: bool) -> list[Record]:
        if name == "resume":
            raise subprocess.CalledProcessError(3, ["python", "-m", "bench", "--only", name])
        return [
            Record(
                workload=name,
                system="router",
                version="0",
                store="-",
                p50_us_per_step=1.0,
                p99_us_per_step=2.0,
                steps_per_s=1e6,
                peak_rss_mb=1.0,
                commits_per_step=0.0,
                samples=1,
            )
        ]

    monkeypatch.setattr(runner, "_in_own_process", in_own_process)
    out = tmp_path / "records.json"
    out.write_text("the committed results")
    assert (
        runner.main(
            ["--only", "floors", "--only", "resume", "--only", "validation", "--json", str(out)]
        )
        == 1
    )
    assert out.read_text() == "the committed results"  # a partial run never replaces a results file
    partial = tmp_path / "records.json.partial"
    assert [r["workload"] for r in json.loads(partial.read_text())] == ["floors", "validation"]
    err = capsys.readouterr().err
    assert "workload resume failed (exit 3)" in err and str(partial) in err
