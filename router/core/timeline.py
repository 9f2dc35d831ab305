"""A run's timeline as text, derived from its events alone. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from .events import (
    Event,
    GraphStarted,
    LimitExceeded,
    ModelResponded,
    ModelRouted,
    NodeFailed,
    NodeFinished,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    RunFailed,
    RunForked,
    RunInterrupted,
    RunMigrated,
    RunResumed,
    RunStarted,
    StepRouted,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
)
from .fsm import RunState
from .graph_fsm import GraphState

__all__ = ["render"]


def _clip(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _describe(event: Event) -> tuple[str, str]:
    if isinstance(event, RunStarted):
        ask = next((m.content for m in reversed(event.messages) if m.role == "user"), "")
        return "started", f"{_clip(ask)!r}"
    if isinstance(event, ModelResponded):
        u = event.usage
        cost = f"  ${event.cost_nusd / 1e9:.6f}" if event.cost_nusd else ""
        served = f"  [{event.served_model}]" if event.served_model else ""
        head = (
            f"step {event.step}  {u.input_tokens} in / {u.output_tokens} out tokens{cost}  "
            f"{event.latency_us / 1000:.1f} ms{served}"
        )
        calls = "; ".join(f"{c.name}({_clip(c.arguments, 60)})" for c in event.tool_calls)
        held = f"  (held for review: {event.held})" if event.held else ""
        answer = f"{head}\n{'':22}-> answer: {_clip(event.text)!r}{held}"
        return "model", f"{head}\n{'':22}-> {calls}" if calls else answer
    if isinstance(event, ModelRouted):
        tried = "; ".join(
            f"{a.model} {a.outcome}" + (f" ({_clip(a.detail, 40)})" if a.detail else "")
            for a in event.attempts
        )
        return "model routed", f"step {event.step} -> {event.chosen or 'none'}: {tried}"
    if isinstance(event, ToolCallRejected):
        where = f" at {event.path}" if event.path else ""
        return (
            "REJECTED",
            f"{event.tool} [{event.call_id}] {event.code}{where}: {_clip(event.reason, 60)}",
        )
    if isinstance(event, ToolCallDenied):
        return (
            "DENIED",
            f"{event.tool} [{event.call_id}] {event.principal} lacks {', '.join(event.missing)}",
        )
    if isinstance(event, ToolStarted):
        effect = "" if event.idempotent else "  (side effect: committed before it ran)"
        return "tool started", f"{event.tool} [{event.call_id}]{effect}"
    if isinstance(event, ToolSucceeded):
        return (
            "tool ok",
            f"{event.tool} [{event.call_id}] -> {_clip(event.result, 50)}  {event.latency_us / 1000:.1f} ms",
        )
    if isinstance(event, ToolFailed):
        what = "timed out" if event.timed_out else "failed"
        return (
            "TOOL FAILED",
            f"{event.tool} [{event.call_id}] {what} after {event.attempts} attempt(s): {_clip(event.error, 50)}",
        )
    if isinstance(event, RunResumed):
        return "resumed", f"by {event.owner}"
    if isinstance(event, RunInterrupted):
        return "INTERRUPTED", f"{', '.join(event.call_ids)}: {event.reason}"
    if isinstance(event, ToolCallResolved):
        return (
            "decided",
            f"{event.call_id}: {event.decision} by {event.by or '?'} {event.note}".rstrip(),
        )
    if isinstance(event, ReviewRequested):
        calls = f" [{', '.join(event.call_ids)}]" if event.call_ids else ""
        return "REVIEW", f"{event.rule}{calls}: {event.reason}"
    if isinstance(event, ReviewDecided):
        edit = f" with arguments {_clip(event.arguments, 40)}" if event.arguments else ""
        return "reviewed", f"{event.decision}{edit} by {event.by or '?'} {event.note}".rstrip()
    if isinstance(event, RunMigrated):
        return (
            "migrated",
            f"{event.migration}: {event.from_definition[:12]} -> {event.to_definition[:12]}",
        )
    if isinstance(event, RunForked):
        return (
            "forked",
            f"from {event.parent_run_id} before seq {event.parent_seq} {event.note}".rstrip(),
        )
    if isinstance(event, GraphStarted):
        return "graph started", f"{event.graph}: {_clip(event.state, 60)}"
    if isinstance(event, NodeFinished):
        item = f"[{_clip(event.item, 20)}]" if event.item else ""
        return (
            "node ok",
            f"{event.node}{item} -> {_clip(event.update, 50)}  {event.latency_us / 1000:.1f} ms",
        )
    if isinstance(event, NodeFailed):
        return (
            "NODE FAILED",
            f"{event.node} after {event.attempts} attempt(s): {_clip(event.error, 50)}",
        )
    if isinstance(event, StepRouted):
        nxt = (
            ", ".join(t.node + (f"[{_clip(t.item, 12)}]" if t.item else "") for t in event.next)
            or "end"
        )
        return "routed", f"step {event.step} -> {nxt}"
    if isinstance(event, LimitExceeded):
        return (
            "LIMIT",
            f"{event.limit}: {event.value:g} (limit {event.ceiling:g}) {event.detail}".rstrip(),
        )
    if isinstance(event, RunFailed):
        return "FAILED", f"{event.code}: {event.reason}"
    if isinstance(event, RunCancelled):
        return "cancelled", event.reason
    return type(event).__name__, ""


def render(run_id: str, events: Sequence[Event], state: RunState | GraphState) -> str:
    """A readable timeline: one line per event, then the run's totals."""
    start = events[0].at if events else 0
    u = state.usage
    spend = f"tokens {u.input_tokens} in / {u.output_tokens} out, cost ${state.cost_nusd / 1e9:.6f}"
    ended = f"=> {state.phase}{': ' + state.reason if state.reason else ''}"
    if isinstance(state, GraphState):
        return "\n".join(
            [
                f"run {run_id}   graph {state.graph}   principal {state.principal.id}",
                *_lines(events, start),
                f"{ended}   steps {state.step}, {spend} (child runs)",
            ]
        )
    p = state.principal
    roles = ", ".join(sorted(p.roles)) or "no roles"
    lines = [
        f"run {run_id}   principal {p.id} ({roles})   model {state.model}",
        *_lines(events, start),
    ]
    lines.append(
        f"{ended}   steps {state.steps}, tool calls {state.tool_calls}, rejected/denied {state.rejected}, {spend}"
    )
    if state.output:
        lines.append(f"   answer: {state.output}")
    return "\n".join(lines)


def _lines(events: Sequence[Event], start: int) -> list[str]:
    out = []
    for seq, event in enumerate(events):
        label, text = _describe(event)
        out.append(f"{seq:4} {(event.at - start) / 1000:9.1f}ms  {label:<13} {text}")
    return out
