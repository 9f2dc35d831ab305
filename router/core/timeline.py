"""A run's timeline as text, derived from its events alone. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .events import (
    ContextSummarized,
    Event,
    GraphStarted,
    LimitExceeded,
    MemoryRecalled,
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
    RunParked,
    RunResumed,
    RunStarted,
    Sent,
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

__all__ = ["describe", "render"]


def _clip(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def describe(event: Event) -> tuple[str, str]:
    """The event's label and text, as the timeline prints them: from the describer of its
    class (or of a base class). A label in capitals marks what went wrong or waits; the
    text may hold more than one line."""
    for cls in type(event).__mro__:
        describer = _DESCRIBERS.get(cls)
        if describer is not None:
            return describer(event)
    return type(event).__name__, ""


# --- the run's lifecycle ----------------------------------------------------------------


def _run_started(event: RunStarted) -> tuple[str, str]:
    ask = next((m.content for m in reversed(event.messages) if m.role == "user"), "")
    return "started", f"{_clip(ask)!r}"


def _run_resumed(event: RunResumed) -> tuple[str, str]:
    return "resumed", f"by {event.owner}"


def _run_parked(event: RunParked) -> tuple[str, str]:
    return "PARKED", f"by {event.owner} after {event.attempts} attempt(s): {_clip(event.reason)}"


def _run_interrupted(event: RunInterrupted) -> tuple[str, str]:
    return "INTERRUPTED", f"{', '.join(event.call_ids)}: {event.reason}"


def _run_migrated(event: RunMigrated) -> tuple[str, str]:
    return (
        "migrated",
        f"{event.migration}: {event.from_definition[:12]} -> {event.to_definition[:12]}",
    )


def _run_forked(event: RunForked) -> tuple[str, str]:
    return (
        "forked",
        f"from {event.parent_run_id} before seq {event.parent_seq} {event.note}".rstrip(),
    )


def _limit_exceeded(event: LimitExceeded) -> tuple[str, str]:
    return (
        "LIMIT",
        f"{event.limit}: {event.value:g} (limit {event.ceiling:g}) {event.detail}".rstrip(),
    )


def _run_failed(event: RunFailed) -> tuple[str, str]:
    return "FAILED", f"{event.code}: {event.reason}"


def _run_cancelled(event: RunCancelled) -> tuple[str, str]:
    unsure = f" (outcome unknown: {', '.join(event.unsure)})" if event.unsure else ""
    return "cancelled", event.reason + unsure


# --- the model ----------------------------------------------------------------------------


def _model_responded(event: ModelResponded) -> tuple[str, str]:
    u = event.usage
    cost = f"  ${event.cost_nusd / 1e9:.6f}" if event.cost_nusd else ""
    served = f"  [{event.served_model}]" if event.served_model else ""
    head = (
        f"step {event.step}  {u.input_tokens} in / {u.output_tokens} out tokens{cost}  "
        f"{event.latency_us / 1000:.1f} ms{served}"
    )
    head += _sent(event.sent) if event.sent is not None else ""
    calls = "; ".join(f"{c.name}({_clip(c.arguments, 60)})" for c in event.tool_calls)
    held = f"  (held for review: {event.held})" if event.held else ""
    answer = f"{head}\n{'':22}-> answer: {_clip(event.text)!r}{held}"
    return "model", f"{head}\n{'':22}-> {calls}" if calls else answer


def _sent(sent: Sent) -> str:
    """What went into the call: its size, its cap, and what the context policy did."""
    done = [
        f"{n} {what}"
        for n, what in (
            (sent.shortened, "results cut"),
            (sent.summarized, "summarised"),
            (sent.left_out, "left out"),
        )
        if n
    ]
    cap = f", answer capped at {sent.max_tokens}" if sent.max_tokens else ""
    fitted = f"; {', '.join(done)}" if done else ""
    return f"\n{'':22}   sent {sent.messages} messages, {sent.tokens} tokens{cap}{fitted}"


def _context_summarized(event: ContextSummarized) -> tuple[str, str]:
    u = event.usage
    cost = f"  ${event.cost_nusd / 1e9:.6f}" if event.cost_nusd else ""
    return (
        "summarised",
        f"for step {event.step}: {event.replaced} messages (events {event.first_seq}-"
        f"{event.last_seq}) by {event.model}, {u.input_tokens} in / {u.output_tokens} out"
        f"{cost}\n{'':22}-> {_clip(event.text)!r}",
    )


def _memory_recalled(event: MemoryRecalled) -> tuple[str, str]:
    found = "; ".join(
        f"{_clip(text, 40)!r} ({score:.2f})"
        for text, score in zip(event.texts, event.scores, strict=False)
    )
    return "recalled", f"for step {event.step} from {event.namespace}: {found or 'nothing'}"


def _model_routed(event: ModelRouted) -> tuple[str, str]:
    tried = "; ".join(
        f"{a.model} {a.outcome}" + (f" ({_clip(a.detail, 40)})" if a.detail else "")
        for a in event.attempts
    )
    return "model routed", f"step {event.step} -> {event.chosen or 'none'}: {tried}"


# --- tool calls ---------------------------------------------------------------------------


def _tool_call_rejected(event: ToolCallRejected) -> tuple[str, str]:
    where = f" at {event.path}" if event.path else ""
    return (
        "REJECTED",
        f"{event.tool} [{event.call_id}] {event.code}{where}: {_clip(event.reason, 60)}",
    )


def _tool_call_denied(event: ToolCallDenied) -> tuple[str, str]:
    return (
        "DENIED",
        f"{event.tool} [{event.call_id}] {event.principal} lacks {', '.join(event.missing)}",
    )


def _tool_started(event: ToolStarted) -> tuple[str, str]:
    effect = "" if event.idempotent else "  (side effect: committed before it ran)"
    return "tool started", f"{event.tool} [{event.call_id}]{effect}"


def _tool_succeeded(event: ToolSucceeded) -> tuple[str, str]:
    return (
        "tool ok",
        f"{event.tool} [{event.call_id}] -> {_clip(event.result, 50)}  "
        f"{event.latency_us / 1000:.1f} ms",
    )


def _tool_failed(event: ToolFailed) -> tuple[str, str]:
    what = "timed out" if event.timed_out else "failed"
    return (
        "TOOL FAILED",
        f"{event.tool} [{event.call_id}] {what} after {event.attempts} attempt(s): "
        f"{_clip(event.error, 50)}",
    )


def _tool_call_resolved(event: ToolCallResolved) -> tuple[str, str]:
    return (
        "decided",
        f"{event.call_id}: {event.decision} by {event.by or '?'} {event.note}".rstrip(),
    )


# --- human review -------------------------------------------------------------------------


def _review_requested(event: ReviewRequested) -> tuple[str, str]:
    calls = f" [{', '.join(event.call_ids)}]" if event.call_ids else ""
    return "REVIEW", f"{event.rule}{calls}: {event.reason}"


def _review_decided(event: ReviewDecided) -> tuple[str, str]:
    names = ", ".join(event.edited)
    changed = "replaced" if event.edited == ("*",) else f"{names} edited" if names else "edited"
    edit = f" with arguments {_clip(event.arguments, 40)} ({changed})" if event.arguments else ""
    return "reviewed", f"{event.decision}{edit} by {event.by or '?'} {event.note}".rstrip()


# --- graph runs ---------------------------------------------------------------------------


def _graph_started(event: GraphStarted) -> tuple[str, str]:
    return "graph started", f"{event.graph}: {_clip(event.state, 60)}"


def _node_finished(event: NodeFinished) -> tuple[str, str]:
    item = f"[{_clip(event.item, 20)}]" if event.item else ""
    return (
        "node ok",
        f"{event.node}{item} -> {_clip(event.update, 50)}  {event.latency_us / 1000:.1f} ms",
    )


def _node_failed(event: NodeFailed) -> tuple[str, str]:
    return (
        "NODE FAILED",
        f"{event.node} after {event.attempts} attempt(s): {_clip(event.error, 50)}",
    )


def _step_routed(event: StepRouted) -> tuple[str, str]:
    nxt = (
        ", ".join(t.node + (f"[{_clip(t.item, 12)}]" if t.item else "") for t in event.next)
        or "end"
    )
    return "routed", f"step {event.step} -> {nxt}"


_DESCRIBERS: dict[type, Callable[[Any], tuple[str, str]]] = {
    RunStarted: _run_started,
    ModelResponded: _model_responded,
    ModelRouted: _model_routed,
    ContextSummarized: _context_summarized,
    MemoryRecalled: _memory_recalled,
    ToolCallRejected: _tool_call_rejected,
    ToolCallDenied: _tool_call_denied,
    ToolStarted: _tool_started,
    ToolSucceeded: _tool_succeeded,
    ToolFailed: _tool_failed,
    RunResumed: _run_resumed,
    RunParked: _run_parked,
    RunInterrupted: _run_interrupted,
    ToolCallResolved: _tool_call_resolved,
    ReviewRequested: _review_requested,
    ReviewDecided: _review_decided,
    RunMigrated: _run_migrated,
    RunForked: _run_forked,
    GraphStarted: _graph_started,
    NodeFinished: _node_finished,
    NodeFailed: _node_failed,
    StepRouted: _step_routed,
    LimitExceeded: _limit_exceeded,
    RunFailed: _run_failed,
    RunCancelled: _run_cancelled,
}


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
        f"{ended}   steps {state.steps}, tool calls {state.tool_calls}, "
        f"rejected/denied {state.rejected}, {spend}"
    )
    if state.output:
        lines.append(f"   answer: {state.output}")
    return "\n".join(lines)


def _lines(events: Sequence[Event], start: int) -> list[str]:
    out = []
    for seq, event in enumerate(events):
        label, text = describe(event)
        out.append(f"{seq:4} {(event.at - start) / 1000:9.1f}ms  {label:<13} {text}")
    return out
