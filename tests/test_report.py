"""Reports are derived from the log alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from router.core.events import (
    Limits,
    Message,
    ModelResponded,
    Principal,
    RunStarted,
    ToolCall,
    ToolCallDenied,
    ToolCallRejected,
    ToolFailed,
    ToolSucceeded,
    Usage,
)
from router.core.report import Report


def calls(*ids: str) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(id=i, name="t", arguments="{}") for i in ids)


def test_cost_tokens_and_outcomes_per_model_and_tool() -> None:
    start = RunStarted(
        at=0,
        messages=(Message(role="user", content="x"),),
        principal=Principal(id="ann"),
        limits=Limits(),
        model="m",
    )
    events = [
        start,
        ModelResponded(
            at=1000,
            step=1,
            tool_calls=calls("a", "b", "c"),
            usage=Usage(input_tokens=10, output_tokens=2),
            cost_nusd=301,
            model="m",
            latency_us=500,
        ),
        ToolSucceeded(at=2000, call_id="a", tool="search", result="1", latency_us=1000),
        ToolFailed(
            at=2000, call_id="b", tool="search", error="boom", timed_out=True, latency_us=3000
        ),
        ToolCallDenied(at=2000, call_id="c", tool="pay", principal="ann", missing=("billing",)),
        ModelResponded(
            at=4000, step=2, tool_calls=calls("d"), cost_nusd=50, model="m", latency_us=700
        ),
        ToolCallRejected(at=4100, call_id="d", tool="pay", code="invalid_arguments", reason="r"),
        ModelResponded(
            at=5000,
            step=3,
            text="done",
            usage=Usage(input_tokens=5, output_tokens=5),
            cost_nusd=9,
            model="m2",
        ),
    ]
    report = Report().add_all(("r1", e) for e in events)
    tables = report.tables()
    assert tables["runs"][1] == [["r1", "ann", "done", "3", "15", "7", "0.000000"]]
    models = {row[0]: row for row in tables["models"][1]}
    assert models["m"][1:5] == ["2", "10", "2", "0.000000"] and models["m2"][1] == "1"
    tools = {row[0]: row for row in tables["tools"][1]}
    assert tools["search"][1:8] == ["2", "1", "0", "1", "0", "0", "50"]
    assert tools["pay"][1:8] == ["2", "0", "0", "0", "1", "1", "0"]
    assert (
        report.tools["search"].cost_nusd + report.tools["pay"].cost_nusd == 301 + 50
    )  # turns with calls
    assert tables["steps"][1][0][0] == "3"
    page = report.html()
    assert page.count("<svg") == 3 and "<table>" in page and "search" in page


def test_router_report_prints_tables_and_writes_html(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "router"]
    subprocess.run([*run, "demo"], cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run(
        [*run, "report", "--html", "report.html"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "calculate" in out and "issue_refund" in out and "demo-model" in out
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
