"""Reports derived from the log alone: tokens, cost, tool outcomes and latency. Pure.

Feed events in log order with ``Report.add(run_id, event)``; read the tables after.
Agent runs and graph runs alike: a graph run's steps are its routed steps, and its tokens
and cost are what its nodes' child runs spent (counted in the child runs' own rows too).
A model turn's cost is shared equally among the tool calls it proposed, so that cost per
tool adds up to the cost of the turns that called tools.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

import msgspec

from .events import (
    ContextSummarized,
    Event,
    GraphStarted,
    LimitExceeded,
    ModelResponded,
    ModelRouted,
    NodeFailed,
    NodeFinished,
    ReviewDecided,
    RunCancelled,
    RunFailed,
    RunStarted,
    StepRouted,
    ToolCallDenied,
    ToolCallRejected,
    ToolFailed,
    ToolSucceeded,
)

__all__ = ["Report"]

_Table = tuple[list[str], list[list[str]]]  # (header, rows) of strings


class _Model(msgspec.Struct):
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_nusd: int = 0
    latencies: list[int] = []


class _Tool(msgspec.Struct):
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    rejected: int = 0
    denied: int = 0
    cost_nusd: int = 0
    latencies: list[int] = []

    @property
    def calls(self) -> int:
        return self.succeeded + self.failed + self.timed_out + self.rejected + self.denied


class _Route(msgspec.Struct):
    answered: int = 0
    failed: int = 0
    timed_out: int = 0
    skipped: int = 0


class _Run(msgspec.Struct):
    principal: str = ""
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_nusd: int = 0
    ended: str = ""
    first_at: int = 0
    last_model_at: int = 0
    step_us: list[int] = []
    turn_cost: dict[str, int] = {}  # call id -> its share of the turn's cost


def _pct(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] / 1000


class Report:
    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self.models: dict[str, _Model] = {}
        self.tools: dict[str, _Tool] = {}
        self.routes: dict[str, _Route] = {}  # per candidate model of a routing policy

    def add_all(self, events: Iterable[tuple[str, Event]]) -> Report:
        for run_id, event in events:
            self.add(run_id, event)
        return self

    def add(self, run_id: str, event: Event) -> None:
        run = self.runs.setdefault(run_id, _Run(first_at=event.at))
        if isinstance(event, RunStarted | GraphStarted):
            run.principal = event.principal.id
        elif isinstance(
            event, NodeFinished | NodeFailed
        ):  # a graph node: what its child runs spent
            run.tokens_in += event.usage.input_tokens
            run.tokens_out += event.usage.output_tokens
            run.cost_nusd += event.cost_nusd
        elif isinstance(event, StepRouted):
            run.steps += 1
            run.ended = "" if event.next else "done"
        elif isinstance(event, ModelResponded):
            self._turn(run, event)
        elif isinstance(event, ContextSummarized):  # spent on the run, not a step
            self._spent(run, event)
        elif isinstance(event, ModelRouted):
            for attempt in event.attempts:
                route = self.routes.setdefault(attempt.model, _Route())
                setattr(route, attempt.outcome, getattr(route, attempt.outcome) + 1)
        elif isinstance(event, ToolSucceeded | ToolFailed | ToolCallRejected | ToolCallDenied):
            self._tool(run, event)
        elif isinstance(event, ReviewDecided):
            # A rejection ends the run, unless it sends the model back to work.
            if event.decision == "reject" and event.rule not in ("before_tool", "output_check"):
                run.ended = f"failed: review ({event.rule}) rejected"
        elif isinstance(event, LimitExceeded):
            run.ended = f"limit_exceeded: {event.limit}"
        elif isinstance(event, RunFailed):
            run.ended = f"failed: {event.code}"
        elif isinstance(event, RunCancelled):
            run.ended = "cancelled"

    def _spent(self, run: _Run, event: ModelResponded | ContextSummarized) -> _Model:
        """A model call's tokens and cost, on its model and its run."""
        model = self.models.setdefault(event.model, _Model())
        model.tokens_in += event.usage.input_tokens
        model.tokens_out += event.usage.output_tokens
        model.cost_nusd += event.cost_nusd
        run.tokens_in += event.usage.input_tokens
        run.tokens_out += event.usage.output_tokens
        run.cost_nusd += event.cost_nusd
        return model

    def _turn(self, run: _Run, event: ModelResponded) -> None:
        model = self._spent(run, event)
        model.turns += 1
        model.latencies.append(event.latency_us)
        run.steps += 1
        run.step_us.append(event.at - (run.last_model_at or run.first_at))
        run.last_model_at = event.at
        if event.tool_calls:
            share, rest = divmod(event.cost_nusd, len(event.tool_calls))
            run.turn_cost = {c.id: share + (i < rest) for i, c in enumerate(event.tool_calls)}
        else:
            run.ended = "done"

    def _tool(
        self, run: _Run, event: ToolSucceeded | ToolFailed | ToolCallRejected | ToolCallDenied
    ) -> None:
        tool = self.tools.setdefault(event.tool, _Tool())
        tool.cost_nusd += run.turn_cost.pop(event.call_id, 0)
        if isinstance(event, ToolSucceeded):
            tool.succeeded += 1
            tool.latencies.append(event.latency_us)
        elif isinstance(event, ToolFailed):
            tool.latencies.append(event.latency_us)
            if event.timed_out:
                tool.timed_out += 1
            else:
                tool.failed += 1
        elif isinstance(event, ToolCallRejected):
            tool.rejected += 1
        else:
            tool.denied += 1

    # --- output -------------------------------------------------------------------------

    def tables(self) -> dict[str, _Table]:
        """Each table as (header, rows) of strings."""
        tables = {
            "runs": self._runs_table(),
            "models": self._models_table(),
            "tools": self._tools_table(),
        }
        if self.routes:
            tables["routing"] = self._routing_table()
        tables["steps"] = self._steps_table()
        return tables

    def _runs_table(self) -> _Table:
        header = ["run", "principal", "ended", "steps", "tokens in", "tokens out", "cost $"]
        rows = [
            [
                rid,
                r.principal,
                r.ended or "unfinished",
                str(r.steps),
                str(r.tokens_in),
                str(r.tokens_out),
                f"{r.cost_nusd / 1e9:.6f}",
            ]
            for rid, r in self.runs.items()
        ]
        return header, rows

    def _models_table(self) -> _Table:
        header = ["model", "turns", "tokens in", "tokens out", "cost $", "p50 ms", "p99 ms"]
        rows = [
            [
                name,
                str(m.turns),
                str(m.tokens_in),
                str(m.tokens_out),
                f"{m.cost_nusd / 1e9:.6f}",
                f"{_pct(m.latencies, 50):.2f}",
                f"{_pct(m.latencies, 99):.2f}",
            ]
            for name, m in sorted(self.models.items())
        ]
        return header, rows

    def _tools_table(self) -> _Table:
        header = [
            "tool",
            "calls",
            "ok",
            "failed",
            "timed out",
            "rejected",
            "denied",
            "success %",
            "cost $",
            "p50 ms",
            "p99 ms",
        ]
        rows = [
            [
                name,
                str(t.calls),
                str(t.succeeded),
                str(t.failed),
                str(t.timed_out),
                str(t.rejected),
                str(t.denied),
                f"{100 * t.succeeded / t.calls:.0f}" if t.calls else "-",
                f"{t.cost_nusd / 1e9:.6f}",
                f"{_pct(t.latencies, 50):.2f}",
                f"{_pct(t.latencies, 99):.2f}",
            ]
            for name, t in sorted(self.tools.items())
        ]
        return header, rows

    def _routing_table(self) -> _Table:
        header = ["model", "answered", "failed", "timed out", "skipped"]
        rows = [
            [name, str(r.answered), str(r.failed), str(r.timed_out), str(r.skipped)]
            for name, r in sorted(self.routes.items())
        ]
        return header, rows

    def _steps_table(self) -> _Table:
        steps = [us for r in self.runs.values() for us in r.step_us]
        header = ["steps", "p50 ms", "p90 ms", "p99 ms", "max ms"]
        row = [str(len(steps)), *(f"{_pct(steps, q):.2f}" for q in (50, 90, 99, 100))]
        return header, [row]

    def text(self) -> str:
        out = []
        for title, (header, rows) in self.tables().items():
            widths = [
                max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                for i, h in enumerate(header)
            ]
            out.append(title)
            out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
            out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
            out.append("")
        return "\n".join(out)

    def html(self) -> str:
        """A self-contained page: the tables, and bar charts of cost per tool and per model."""
        parts = [
            "<!doctype html><meta charset=utf-8><title>router report</title>",
            "<style>body{font:14px sans-serif;margin:2em}"
            "table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#eee}</style>",
        ]
        parts.append(
            _bars(
                "cost per tool ($)", {n: t.cost_nusd / 1e9 for n, t in sorted(self.tools.items())}
            )
        )
        parts.append(
            _bars(
                "cost per model ($)", {n: m.cost_nusd / 1e9 for n, m in sorted(self.models.items())}
            )
        )
        parts.append(
            _bars(
                "tool success (%)",
                {
                    n: 100 * t.succeeded / t.calls if t.calls else 0
                    for n, t in sorted(self.tools.items())
                },
            )
        )
        for title, (header, rows) in self.tables().items():
            parts.append(f"<h2>{html.escape(title)}</h2><table><tr>")
            parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
            parts.append("</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        return "".join(parts)


def _bars(title: str, values: dict[str, float]) -> str:
    top = max(values.values(), default=0) or 1
    rows = []
    for i, (name, value) in enumerate(values.items()):
        width = 400 * value / top
        rows.append(
            f'<text x="0" y="{20 * i + 14}">{html.escape(name)}</text>'
            f'<rect x="160" y="{20 * i + 3}" width="{width:.1f}" height="14" fill="#4a7"/>'
            f'<text x="{165 + width:.1f}" y="{20 * i + 14}">{value:.6g}</text>'
        )
    return (
        f"<h2>{html.escape(title)}</h2><svg width='700' height='{20 * len(values) + 10}'>"
        + "".join(rows)
        + "</svg>"
    )
