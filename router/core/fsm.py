"""The agent loop as an explicit finite-state machine. Pure: no I/O, no clock, no randomness.

``apply(state, event)`` is total: a (phase, event kind) pair that is not in ``TABLE`` never
raises; it marks the state faulty and the next effect records a ``run_failed`` event.
``fold(events)`` rebuilds a run's state from its log. What the driver does next is
``router.core.effects``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeAlias

import msgspec
from msgspec.structs import replace

from .events import (
    EVENT_TYPES,
    NO_USAGE,
    ContextSummarized,
    Event,
    Kind,
    LimitExceeded,
    Limits,
    ModelResponded,
    Principal,
    ReviewDecided,
    ReviewRequested,
    ReviewRules,
    RunCancelled,
    RunFailed,
    RunInterrupted,
    RunMigrated,
    RunStarted,
    ToolCall,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    Usage,
    kind_of,
    kind_of_type,
)
from .limits import budgeted, call_signature, forces_answer

__all__ = [
    "INTERRUPTED",
    "TABLE",
    "TERMINAL",
    "CallState",
    "Phase",
    "RunState",
    "apply",
    "fold",
    "mermaid",
]


class Phase(enum.StrEnum):
    NEW = "new"
    AWAITING_MODEL = "awaiting_model"
    RUNNING_TOOLS = "running_tools"
    INTERRUPTED = "interrupted"
    AWAITING_REVIEW = "awaiting_review"
    FINAL_ANSWER = "final_answer"  # a limit was reached: the model is asked for a last answer
    DONE = "done"
    FAILED = "failed"
    LIMIT_EXCEEDED = "limit_exceeded"
    CANCELLED = "cancelled"


# The phases as module names, for the hot path: on Python 3.11 looking a member up on an
# Enum class goes through EnumType.__getattr__'s slot, which costs more than the rest of
# a transition.
NEW = Phase.NEW
AWAITING_MODEL = Phase.AWAITING_MODEL
RUNNING_TOOLS = Phase.RUNNING_TOOLS
INTERRUPTED = Phase.INTERRUPTED
AWAITING_REVIEW = Phase.AWAITING_REVIEW
FINAL_ANSWER = Phase.FINAL_ANSWER
DONE = Phase.DONE
FAILED = Phase.FAILED
LIMIT_EXCEEDED = Phase.LIMIT_EXCEEDED
CANCELLED = Phase.CANCELLED

TERMINAL = frozenset({DONE, FAILED, LIMIT_EXCEEDED, CANCELLED})
LIVE = tuple(p for p in Phase if p not in TERMINAL and p is not NEW)

CallStatus: TypeAlias = Literal["proposed", "held", "started", "interrupted", "done"]


class CallState(msgspec.Struct, frozen=True, gc=False):
    """One call of the current model turn."""

    call: ToolCall
    status: CallStatus = "proposed"
    attempt: int = 0  # how many times it was started
    started: ToolStarted | None = None
    approved: bool = False  # a reviewer approved it (tools that need approval)


class RunState(msgspec.Struct, frozen=True, gc=False):
    phase: Phase = NEW
    limits: Limits = Limits()
    principal: Principal = Principal(id="")
    model: str = ""
    definition: str = ""  # the hash of the definition the run is under
    started_at: int = 0
    last_at: int = 0
    paused_us: int = 0  # time parked (waiting for a person, a decision or a resume): not active
    steps: int = 0
    tool_calls: int = 0
    rejected: int = 0
    usage: Usage = Usage()
    cost_nusd: int = 0
    recent_calls: tuple[str, ...] = ()
    calls: tuple[CallState, ...] = ()
    output: str = ""
    reason: str = ""  # why the run ended, for the terminal phases other than done
    review: ReviewRules = ReviewRules()
    pending_review: str = ""  # the rule the run waits on, in awaiting_review
    held_output: str = ""  # an answer held for review
    forced: str = ""  # the limit that forced a final answer (Limits.final_answer)
    failures_in_a_row: int = 0
    cost_reviewed: bool = False
    after_review: tuple[str, ...] = ()  # succeeded calls whose results wait for a reviewer
    fault: str = ""  # an event that was not allowed where it arrived
    budgeted: bool = (
        False  # the limits set a deadline, cost or token limit (derived from them once)
    )

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


# --- the transition table -------------------------------------------------------------

Handler: TypeAlias = Callable[[RunState, Any, int], RunState]
# Each handler takes (state, event, at) and returns the new state with last_at = at, in
# one replace: the fold runs once per event on the hot path.


def _start(state: RunState, event: RunStarted, at: int) -> RunState:
    return replace(
        state,
        phase=AWAITING_MODEL,
        limits=event.limits,
        principal=event.principal,
        model=event.model,
        definition=event.definition,
        review=event.review,
        started_at=event.at,
        last_at=at,
        budgeted=budgeted(event.limits),
    )


def _plus(used: Usage, add: Usage) -> Usage:
    if not (add.input_tokens or add.output_tokens):
        return used
    return Usage(
        input_tokens=used.input_tokens + add.input_tokens,
        output_tokens=used.output_tokens + add.output_tokens,
    )


def _summarized(state: RunState, event: ContextSummarized, at: int) -> RunState:
    """A summary made for the next turn: spent like a turn, no step taken."""
    return replace(
        state,
        usage=_plus(state.usage, event.usage),
        cost_nusd=state.cost_nusd + event.cost_nusd,
        last_at=at,
    )


def _model_responded(state: RunState, event: ModelResponded, at: int) -> RunState:
    used, add = state.usage, event.usage
    usage = (
        Usage(
            input_tokens=used.input_tokens + add.input_tokens,
            output_tokens=used.output_tokens + add.output_tokens,
        )
        if add.input_tokens or add.output_tokens
        else used
    )  # _plus, inlined: this runs on every step
    if not event.tool_calls:
        if event.held:
            return replace(
                state,
                phase=AWAITING_REVIEW,
                pending_review="output_check",
                held_output=event.text,
                calls=(),
                steps=state.steps + 1,
                usage=usage,
                cost_nusd=state.cost_nusd + event.cost_nusd,
                last_at=at,
            )
        return replace(
            state,
            phase=DONE,
            output=event.text,
            calls=(),
            steps=state.steps + 1,
            usage=usage,
            cost_nusd=state.cost_nusd + event.cost_nusd,
            last_at=at,
        )
    proposed = event.tool_calls
    if len(proposed) == 1:  # most turns propose one call
        calls: tuple[CallState, ...] = (CallState(proposed[0]),)
        recent = state.recent_calls + (call_signature(proposed[0]),)
    else:
        several, signatures = [], []
        for c in proposed:  # a plain loop: this runs once per model turn
            several.append(CallState(c))
            signatures.append(call_signature(c))
        calls, recent = tuple(several), state.recent_calls + tuple(signatures)
    window = state.limits.loop_window
    if len(recent) > window:
        recent = recent[-window:]
    return replace(
        state,
        phase=RUNNING_TOOLS,
        calls=calls,
        recent_calls=recent,
        steps=state.steps + 1,
        usage=usage,
        cost_nusd=state.cost_nusd + event.cost_nusd,
        last_at=at,
    )


def _find(state: RunState, call_id: str, status: CallStatus) -> int:
    i = 0
    for c in state.calls:  # a plain loop: a turn holds a few calls
        if c.status == status and c.call.id == call_id:
            return i
        i += 1
    return -1


def _replaced(
    calls: tuple[CallState, ...], index: int, updated: CallState
) -> tuple[CallState, ...]:
    """The turn's calls with the one at ``index`` replaced."""
    return (updated,) if len(calls) == 1 else calls[:index] + (updated,) + calls[index + 1 :]


def _settled(
    state: RunState, index: int, updated: CallState
) -> tuple[tuple[CallState, ...], Phase]:
    """The turn's calls with one replaced, and the phase that follows: the model's turn
    when every call is done, back to tools when no call waits for a decision any more."""
    calls = _replaced(state.calls, index, updated)
    pending = interrupted = False
    for c in calls:  # a plain loop: this runs once per tool result
        if c.status == "interrupted":
            interrupted = True
        elif c.status != "done":
            pending = True
    if not pending and not interrupted:
        return calls, AWAITING_MODEL
    if state.phase is INTERRUPTED and not interrupted:
        return calls, RUNNING_TOOLS
    return calls, state.phase


def _settle(state: RunState, index: int, updated: CallState, at: int, **changes: Any) -> RunState:
    """The state with one call of the turn replaced (see ``_settled``)."""
    calls, phase = _settled(state, index, updated)
    return replace(state, calls=calls, phase=phase, last_at=at, **changes)


def _fault(state: RunState, event: Event, why: str) -> RunState:
    return replace(state, fault=f"{kind_of(event)} in phase {state.phase}: {why}")


def _refused(state: RunState, event: ToolCallRejected | ToolCallDenied, at: int) -> RunState:
    i = _find(state, event.call_id, "proposed")
    if i < 0:
        return _fault(state, event, f"no proposed call {event.call_id!r}")
    return _settle(
        state, i, replace(state.calls[i], status="done"), at, rejected=state.rejected + 1
    )


def _tool_started(state: RunState, event: ToolStarted, at: int) -> RunState:
    i = _find(state, event.call_id, "proposed")
    if i < 0:
        return _fault(state, event, f"no proposed call {event.call_id!r}")
    old = state.calls[i]
    new = CallState(old.call, "started", old.attempt + 1, event)
    return replace(
        state,
        calls=_replaced(state.calls, i, new),
        tool_calls=state.tool_calls + (old.attempt == 0),
        last_at=at,
    )


def _tool_ended(state: RunState, event: ToolSucceeded | ToolFailed, at: int) -> RunState:
    i = _find(state, event.call_id, "started")
    if i < 0:
        return _fault(state, event, f"no started call {event.call_id!r}")
    old = state.calls[i]
    done = CallState(old.call, "done", old.attempt, old.started, old.approved)
    if isinstance(event, ToolFailed):
        failed: dict[str, Any] = (
            _spend(state, event) if event.cost_nusd or event.usage is not NO_USAGE else {}
        )
        return _settle(state, i, done, at, failures_in_a_row=state.failures_in_a_row + 1, **failed)
    spent, after = event.usage, state.review.after_tools
    if not (spent.input_tokens or spent.output_tokens or event.cost_nusd or after or event.final):
        calls, phase = _settled(state, i, done)  # a plain result: the hot path
        return replace(state, calls=calls, phase=phase, failures_in_a_row=0, last_at=at)
    extra = (
        _spend(state, event) if spent.input_tokens or spent.output_tokens or event.cost_nusd else {}
    )
    if event.tool in after:
        extra["after_review"] = state.after_review + (event.call_id,)
    settled = _settle(state, i, done, at, failures_in_a_row=0, **extra)
    if event.final and settled.phase is AWAITING_MODEL:  # a handoff answered for the run
        answer = msgspec.json.decode(event.result)
        return replace(
            settled, phase=DONE, output=answer if isinstance(answer, str) else event.result
        )
    return settled


def _spend(state: RunState, event: ToolSucceeded | ToolFailed) -> dict[str, Any]:
    """What a tool's child runs spent, added to the run's (it counts against its limits)."""
    used, add = state.usage, event.usage
    usage = Usage(
        input_tokens=used.input_tokens + add.input_tokens,
        output_tokens=used.output_tokens + add.output_tokens,
    )
    return {"usage": usage, "cost_nusd": state.cost_nusd + event.cost_nusd}


def _interrupted(state: RunState, event: RunInterrupted, at: int) -> RunState:
    calls = list(state.calls)
    for call_id in event.call_ids:
        i = _find(state, call_id, "started")
        if i < 0:
            return _fault(state, event, f"no started call {call_id!r}")
        calls[i] = replace(calls[i], status="interrupted")
    return replace(state, phase=INTERRUPTED, calls=tuple(calls), last_at=at)


def _after_a_wait(state: RunState, event: Event) -> RunState:
    """The state with the time since its last event counted as parked, not active: the
    event resumes a run that waited (for a person, a decision, or a driver after a crash)."""
    if event.at <= state.last_at:
        return state
    return replace(state, paused_us=state.paused_us + event.at - state.last_at)


def _resumed(state: RunState, event: Event, at: int) -> RunState:
    return replace(_after_a_wait(state, event), last_at=at)


def _resolved(state: RunState, event: ToolCallResolved, at: int) -> RunState:
    state = _after_a_wait(state, event)
    i = _find(state, event.call_id, "interrupted")
    if i < 0:
        return _fault(state, event, f"no interrupted call {event.call_id!r}")
    if event.decision == "fail":
        reason = f"call {event.call_id} failed by {event.by or 'a reviewer'}: {event.note}".rstrip(
            ": "
        )
        return replace(state, phase=FAILED, reason=reason, last_at=at)
    status: CallStatus = "proposed" if event.decision == "retry" else "done"
    return _settle(state, i, replace(state.calls[i], status=status), at)


def _review_requested(state: RunState, event: ReviewRequested, at: int) -> RunState:
    calls = state.calls
    if (event.rule == "before_tool") != (state.phase is RUNNING_TOOLS):
        return _fault(
            state, event, "held calls are reviewed while tools run, other rules before a model call"
        )
    if event.rule == "before_tool":
        held = set(event.call_ids)
        if not held or not held <= {c.call.id for c in calls if c.status == "proposed"}:
            return _fault(state, event, "holds calls that are not proposed")
        calls = tuple(replace(c, status="held") if c.call.id in held else c for c in calls)
    return replace(state, phase=AWAITING_REVIEW, pending_review=event.rule, calls=calls, last_at=at)


def _review_decided(state: RunState, event: ReviewDecided, at: int) -> RunState:
    state = _after_a_wait(state, event)
    rule, approve = state.pending_review, event.decision == "approve"
    note = f" ({event.note})" if event.note else ""
    who = event.by or "a reviewer"
    if rule == "before_tool":
        held = [i for i, c in enumerate(state.calls) if c.status == "held"]
        if event.arguments and len(held) != 1:
            return _fault(state, event, "an edit of the arguments needs exactly one held call")
        calls = list(state.calls)
        for i in held:
            call = calls[i].call
            if approve and event.arguments:
                call = replace(call, arguments=event.arguments, invalid_utf8=False)
            calls[i] = replace(
                calls[i], call=call, status="proposed" if approve else "done", approved=approve
            )
        phase = AWAITING_MODEL if all(c.status == "done" for c in calls) else RUNNING_TOOLS
        rejected = state.rejected + (0 if approve else len(held))
        return replace(
            state, phase=phase, calls=tuple(calls), pending_review="", rejected=rejected, last_at=at
        )
    if rule == "output_check":
        if approve:
            return replace(
                state,
                phase=LIMIT_EXCEEDED if state.forced else DONE,
                output=state.held_output,
                held_output="",
                pending_review="",
                last_at=at,
            )
        if state.forced:  # the one last answer was rejected: none is left to ask for
            state = replace(state, held_output="", pending_review="")
            return _unanswered(state, f"{who} rejected it{note}", at)
        return replace(state, phase=AWAITING_MODEL, held_output="", pending_review="", last_at=at)
    if not approve:
        reason = f"review ({rule}) rejected by {who}{note}"
        return replace(state, phase=FAILED, reason=reason, pending_review="", last_at=at)
    approved: dict[str, dict[str, Any]] = {
        "cost": {"cost_reviewed": True},
        "tool_failures": {"failures_in_a_row": 0},
        "after_tool": {"after_review": ()},
    }
    return replace(
        state, phase=AWAITING_MODEL, pending_review="", last_at=at, **approved.get(rule, {})
    )


def _noted(state: RunState, event: Event, at: int) -> RunState:
    """An event that records a fact and changes nothing but the time."""
    return replace(state, last_at=at)


def _migrated(state: RunState, event: RunMigrated, at: int) -> RunState:
    if event.from_definition != state.definition:
        return _fault(state, event, "migrates from a definition the run is not under")
    return replace(state, definition=event.to_definition, last_at=at)


def _reason(event: LimitExceeded | RunFailed | RunCancelled) -> str:
    if isinstance(event, LimitExceeded):
        reason = f"{event.limit}: {event.value:g} (limit {event.ceiling:g})"
        return reason + (f" ({event.detail})" if event.detail else "")
    return event.reason


def _ended(phase: Phase) -> Handler:
    def end(state: RunState, event: LimitExceeded | RunFailed | RunCancelled, at: int) -> RunState:
        reason = _reason(event)
        if isinstance(event, LimitExceeded) and forces_answer(state.limits, event.limit):
            return replace(state, phase=FINAL_ANSWER, reason=reason, forced=event.limit, last_at=at)
        return replace(state, phase=phase, reason=reason, last_at=at)

    return end


def _final_answer(state: RunState, event: ModelResponded, at: int) -> RunState:
    """The model's last answer, asked for at a limit: the run's output, the limit its end."""
    state = replace(
        state,
        usage=_plus(state.usage, event.usage),
        cost_nusd=state.cost_nusd + event.cost_nusd,
        steps=state.steps + 1,
        calls=(),
        last_at=at,
    )
    if event.held:
        return replace(
            state, phase=AWAITING_REVIEW, pending_review="output_check", held_output=event.text
        )
    if not event.text.strip():
        return _unanswered(state, "the model's answer was empty", at)
    return replace(state, phase=LIMIT_EXCEEDED, output=event.text)


def _unanswered(state: RunState, why: str, at: int) -> RunState:
    """The run ends at its limit with no answer from the model: its output says so."""
    reason = f"{state.reason}; no final answer: {why}"
    output = f"No answer: the run stopped at a limit ({reason})."
    return replace(state, phase=LIMIT_EXCEEDED, reason=reason, output=output, calls=(), last_at=at)


def _final_answer_failed(state: RunState, event: LimitExceeded | RunFailed, at: int) -> RunState:
    if state.fault:  # an event out of place: the log is wrong, the run failed
        return replace(state, phase=FAILED, reason=_reason(event), last_at=at)
    return _unanswered(state, _reason(event), at)


Entry: TypeAlias = tuple[Handler, tuple[Phase, ...]]

TABLE: dict[tuple[Phase, Kind], Entry] = {
    (NEW, Kind.RUN_STARTED): (_start, (AWAITING_MODEL,)),
    (AWAITING_MODEL, Kind.MODEL_ROUTED): (_noted, (AWAITING_MODEL,)),
    (AWAITING_MODEL, Kind.CONTEXT_SUMMARIZED): (_summarized, (AWAITING_MODEL,)),
    (AWAITING_MODEL, Kind.MEMORY_RECALLED): (_noted, (AWAITING_MODEL,)),
    (AWAITING_MODEL, Kind.MODEL_RESPONDED): (_model_responded, (RUNNING_TOOLS, DONE)),
    (RUNNING_TOOLS, Kind.TOOL_CALL_REJECTED): (_refused, (RUNNING_TOOLS, AWAITING_MODEL)),
    (RUNNING_TOOLS, Kind.TOOL_CALL_DENIED): (_refused, (RUNNING_TOOLS, AWAITING_MODEL)),
    (RUNNING_TOOLS, Kind.TOOL_STARTED): (_tool_started, (RUNNING_TOOLS,)),
    (RUNNING_TOOLS, Kind.TOOL_SUCCEEDED): (_tool_ended, (RUNNING_TOOLS, AWAITING_MODEL, DONE)),
    (RUNNING_TOOLS, Kind.TOOL_FAILED): (_tool_ended, (RUNNING_TOOLS, AWAITING_MODEL)),
    (RUNNING_TOOLS, Kind.RUN_INTERRUPTED): (_interrupted, (INTERRUPTED,)),
    (INTERRUPTED, Kind.TOOL_CALL_RESOLVED): (
        _resolved,
        (INTERRUPTED, RUNNING_TOOLS, AWAITING_MODEL, FAILED),
    ),
    (RUNNING_TOOLS, Kind.REVIEW_REQUESTED): (_review_requested, (AWAITING_REVIEW,)),
    (AWAITING_MODEL, Kind.REVIEW_REQUESTED): (_review_requested, (AWAITING_REVIEW,)),
    (AWAITING_REVIEW, Kind.REVIEW_DECIDED): (
        _review_decided,
        (RUNNING_TOOLS, AWAITING_MODEL, DONE, FAILED, LIMIT_EXCEEDED),
    ),
}
for _phase in LIVE:
    TABLE[(_phase, Kind.RUN_RESUMED)] = (_resumed, (_phase,))
    TABLE[(_phase, Kind.RUN_PARKED)] = (_noted, (_phase,))
    TABLE[(_phase, Kind.RUN_MIGRATED)] = (_migrated, (_phase,))
    TABLE[(_phase, Kind.RUN_FORKED)] = (_noted, (_phase,))
    TABLE[(_phase, Kind.LIMIT_EXCEEDED)] = (_ended(LIMIT_EXCEEDED), (LIMIT_EXCEEDED, FINAL_ANSWER))
    TABLE[(_phase, Kind.RUN_FAILED)] = (_ended(FAILED), (FAILED,))
    TABLE[(_phase, Kind.RUN_CANCELLED)] = (_ended(CANCELLED), (CANCELLED,))
# At a limit, with Limits.final_answer: the model's last answer, or the reason there is none.
TABLE.update(
    {
        (FINAL_ANSWER, Kind.MODEL_ROUTED): (_noted, (FINAL_ANSWER,)),
        (FINAL_ANSWER, Kind.CONTEXT_SUMMARIZED): (_summarized, (FINAL_ANSWER,)),
        (FINAL_ANSWER, Kind.MEMORY_RECALLED): (_noted, (FINAL_ANSWER,)),
        (FINAL_ANSWER, Kind.MODEL_RESPONDED): (
            _final_answer,
            (LIMIT_EXCEEDED, AWAITING_REVIEW),
        ),
        (FINAL_ANSWER, Kind.LIMIT_EXCEEDED): (_final_answer_failed, (LIMIT_EXCEEDED,)),
        (FINAL_ANSWER, Kind.RUN_FAILED): (_final_answer_failed, (LIMIT_EXCEEDED, FAILED)),
    }
)

# The same table by phase, then by event type, for the hot path: two lookups by one key
# each cost less than one by a pair.
_NO_HANDLERS: dict[type[Event], Handler] = {}
_HANDLERS: dict[Phase, dict[type[Event], Handler]] = {
    phase: {
        event_type: TABLE[(phase, kind_of_type(event_type))][0]
        for event_type in EVENT_TYPES
        if (phase, kind_of_type(event_type)) in TABLE
    }
    for phase in Phase
}


def apply(state: RunState, event: Event) -> RunState:
    """Fold one event into the state. Never raises."""
    handler = _HANDLERS.get(state.phase, _NO_HANDLERS).get(type(event))
    if handler is None:
        return _fault(state, event, "not in the transition table")
    at = event.at if event.at > state.last_at else state.last_at
    try:
        return handler(state, event, at)
    except Exception as exc:  # a malformed event must become a fault, never escape
        return _fault(state, event, f"{type(exc).__name__}: {exc}")


def fold(events: Iterable[Event], state: RunState | None = None) -> RunState:
    state = state or RunState()
    for event in events:
        state = apply(state, event)
    return state


def mermaid() -> str:
    """The transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {NEW.value}"]
    seen: set[tuple[str, str, str]] = set()
    for (phase, kind), (_, targets) in TABLE.items():
        for target in targets:
            edge = (phase.value, target.value, kind.value)
            if edge not in seen:
                seen.add(edge)
                lines.append(f"    {phase.value} --> {target.value}: {kind.value}")
    for phase in LIVE:
        lines.append(f"    {phase.value} --> {FAILED.value}: any other event (run_failed)")
    for phase in sorted(TERMINAL):
        lines.append(f"    {phase.value} --> [*]")
    return "\n".join(lines)
