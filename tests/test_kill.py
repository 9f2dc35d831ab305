"""SIGKILL a 30-step run at 20 or more random points; every resume must converge on
the uninterrupted run, with an intact chain and no side effect performed twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from router import Phase, SqliteStore, load_run, verify
from router.core.transcript import Transcript

CHILD = Path(__file__).with_name("crash_child.py")
ROUTER = [sys.executable, "-m", "router.cli"]


def run_child(log: Path, ledger: Path, kill_at: random.Random | None, child: Path = CHILD) -> str:
    """Run the child until it ends (returns its result line) or is killed ("killed")."""
    with subprocess.Popen(
        [sys.executable, str(child), str(log), str(ledger), "run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        return _drive_child(proc, kill_at)


def _drive_child(proc: subprocess.Popen[str], kill_at: random.Random | None) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("result "):
                proc.wait()
                return line.split()[1]
            # kill inside side-effecting tools more often: that is where resume must be careful
            odds = 0.5 if line.startswith("transfer") else 0.2
            if kill_at is not None and kill_at.random() < odds:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                assert proc.returncode == -signal.SIGKILL
                return "killed"
            proc.stdin.write("go\n")
            proc.stdin.flush()
        raise AssertionError(f"the child ended without a result (exit {proc.wait()})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def decide_from_ledger(log: Path, ledger: Path) -> list[str]:
    """Play the reviewer: the ledger says whether an interrupted transfer took effect."""

    async def interrupted() -> list[tuple[str, int]]:
        async with SqliteStore.open(log) as store:
            _, state, _ = await load_run(store, "run")
        return [(c.call.id, int(c.call.id[1:])) for c in state.calls if c.status == "interrupted"]

    done = set(ledger_effects(ledger)) if ledger.exists() else set()
    decisions = []
    for call_id, n in anyio.run(interrupted):
        if n in done:
            args = ["supply", "--result", f'"moved {n}"']
        else:
            args = ["retry"]
        decisions.append(args[0])
        subprocess.run(
            [*ROUTER, "decide", "run", call_id, *args, "--db", str(log), "--by", "kill-test"],
            check=True,
            capture_output=True,
        )
    return decisions


def ledger_effects(ledger: Path) -> list[int]:
    conn = sqlite3.connect(ledger)
    try:
        return [n for (n,) in conn.execute("SELECT n FROM effects ORDER BY n")]
    finally:
        conn.close()


async def summary(log: Path) -> tuple[object, ...]:
    async with SqliteStore.open(log) as store:
        stored = await store.read("run")
        events, state, _ = await load_run(store, "run")
    verify(stored)
    tool_messages = [(m.role, m.content, m.call_id) for m in Transcript(events).messages]
    return state.phase, state.output, state.steps, state.tool_calls, state.usage, tool_messages


@pytest.mark.parametrize("seed", [20261125])
def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path, seed: int) -> None:
    reference_log, reference_ledger = tmp_path / "reference.db", tmp_path / "reference-ledger.db"
    assert run_child(reference_log, reference_ledger, None) == "done"
    expected = anyio.run(summary, reference_log)

    log, ledger = tmp_path / "killed.db", tmp_path / "killed-ledger.db"
    rng = random.Random(seed)
    kills = 0
    decisions: list[str] = []
    for _ in range(500):
        outcome = run_child(log, ledger, rng)
        if outcome == "killed":
            kills += 1
        elif outcome == "interrupted":
            decisions += decide_from_ledger(log, ledger)
        else:
            assert outcome == "done"
            break
    assert kills >= 20, kills
    assert anyio.run(summary, log) == expected
    assert expected[0] is Phase.DONE
    assert ledger_effects(ledger) == list(range(3, 31, 3))  # every transfer exactly once
    assert {"supply", "retry"} <= set(decisions)  # both sides of the side-effect window were hit


GRAPH_CHILD = Path(__file__).with_name("graph_child.py")


def graph_log(log: Path) -> list[bytes]:
    """The graph run's events, resumptions and timings set aside."""
    from msgspec.structs import replace

    from router.core.events import RunResumed, decode_event, encode_event

    async def read() -> list[bytes]:
        async with SqliteStore.open(log) as store:
            stored = await store.read("run")
        verify(stored)
        out = []
        for s in stored:
            event = decode_event(s.payload)
            if isinstance(event, RunResumed):
                continue
            event = replace(event, at=0)
            if hasattr(event, "latency_us"):
                event = replace(event, latency_us=0)
            out.append(encode_event(event))
        return out

    return anyio.run(read)


def test_a_graph_fanout_killed_and_resumed_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    assert run_child(tmp_path / "ref.db", tmp_path / "x", None, GRAPH_CHILD) == "done"
    expected = graph_log(tmp_path / "ref.db")
    rng = random.Random(7)
    kills = 0
    for _ in range(300):
        outcome = run_child(tmp_path / "killed.db", tmp_path / "x", rng, GRAPH_CHILD)
        if outcome != "killed":
            assert outcome == "done"
            break
        kills += 1
    assert kills >= 10, kills
    assert graph_log(tmp_path / "killed.db") == expected


AGENTS_CHILD = Path(__file__).with_name("agents_child.py")


def test_a_killed_agent_tree_resumes_whole_and_leaves_no_child_unfinished(tmp_path: Path) -> None:
    assert run_child(tmp_path / "ref.db", tmp_path / "x", None, AGENTS_CHILD) == "done"

    async def tree(log: Path) -> dict[str, tuple[str, str]]:
        async with SqliteStore.open(log) as store:
            out = {}
            for summary in await store.runs():
                events, state, _ = await load_run(store, summary.run_id)
                out[summary.run_id.split("/", 1)[-1] if "/" in summary.run_id else "top"] = (
                    state.phase,
                    state.output,
                )
            return out

    expected = anyio.run(tree, tmp_path / "ref.db")
    rng = random.Random(11)
    kills = 0
    for _ in range(300):
        outcome = run_child(tmp_path / "killed.db", tmp_path / "x", rng, AGENTS_CHILD)
        if outcome != "killed":
            assert outcome == "done"
            break
        kills += 1
    assert kills >= 10, kills
    got = anyio.run(tree, tmp_path / "killed.db")
    assert got == expected  # the same tree of runs, each finished, none started twice
    assert all(phase is Phase.DONE for phase, _ in got.values())


README_CHILD = Path(__file__).with_name("readme_child.py")


def readme_child(log: Path, ledger: Path, step: str, offset_s: float, kill_at: int = 0) -> str:
    """Run the README's service process for one step; SIGKILL it once ``kill_at`` commits
    are stored (0: let it end). Returns its result line, or "killed"."""
    with subprocess.Popen(
        [sys.executable, str(README_CHILD), str(log), str(ledger), step, str(offset_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        commits = 0
        try:
            for line in proc.stdout:
                if line.startswith("result "):
                    proc.wait()
                    return line.removeprefix("result ").strip()
                commits += line.startswith("committed ")
                if kill_at and commits == kill_at:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return "killed"
                proc.stdin.write("go\n")
                proc.stdin.flush()
            raise AssertionError(f"the child ended without a result (exit {proc.wait()})")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_readme_agent_survives_a_kill_and_a_review_that_outlasts_its_deadline(
    tmp_path: Path,
) -> None:
    from router.core.events import ReviewDecided, RunResumed, ToolSucceeded
    from router.core.limits import active_s

    log, ledger = tmp_path / "agents.db", tmp_path / "ledger.db"
    # Killed between steps: the customer was read and stored, the next model call not made.
    assert readme_child(log, ledger, "start", 0, kill_at=2) == "killed"
    # Restarted 31 s later (the README's deadline is 30 s): the run goes on to the refund,
    # which waits for a reviewer.
    assert readme_child(log, ledger, "resume", 31) == "awaiting_review"
    # The reviewer answers ten minutes later, lowering the amount; the run finishes.
    assert readme_child(log, ledger, "approve", 31 + 600).startswith("done")

    async def read() -> tuple[list[object], object]:
        async with SqliteStore.open(log) as store:
            verify(await store.read("readme-run"))
            events, state, _ = await load_run(store, "readme-run")
        return events, state

    events, state = anyio.run(read)
    assert state.phase is Phase.DONE and state.reason == ""  # type: ignore[attr-defined]
    assert "refund is issued" in state.output  # type: ignore[attr-defined]
    assert active_s(state) < 30 < state.paused_us / 1e6  # type: ignore[arg-type,attr-defined]
    assert sum(isinstance(e, RunResumed) for e in events) == 2
    (decided,) = [e for e in events if isinstance(e, ReviewDecided)]
    assert decided.edited == ("amount",) and decided.by == "ann"
    kinds = [type(e).__name__ for e in events]
    first_resume = kinds.index("RunResumed")  # killed between steps: after the lookup's result
    assert kinds[first_resume - 1 : first_resume + 2] == [
        "ToolSucceeded",
        "RunResumed",
        "ModelResponded",
    ]
    assert [e.tool for e in events if isinstance(e, ToolSucceeded)] == [
        "lookup_customer",
        "issue_refund",
    ]
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT customer_id, amount FROM refunds").fetchall() == [(42, 900)]
    db.close()
