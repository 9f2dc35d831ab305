"""Replay: drive a run again from its log and check that every event comes out the same.

What the model said and what tools returned are taken from the log (they are the world's
answers); everything router decided is decided again by the current code and definition
(validation, access, limits, the state machine) and compared byte for byte with what was
recorded, timestamps aside. The first difference is reported. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
from msgspec.structs import replace

from .effects import (
    AwaitDecision,
    AwaitReview,
    CallModel,
    DecideCalls,
    Finish,
    ForceAnswer,
    Record,
    RunTools,
    next_effect,
    resume_events,
)
from .events import (
    ContextSummarized,
    Event,
    LimitExceeded,
    MemoryRecalled,
    ModelResponded,
    ModelRouted,
    ReviewDecided,
    RunCancelled,
    RunFailed,
    RunForked,
    RunMigrated,
    RunParked,
    RunResumed,
    RunStarted,
    ToolCallResolved,
    ToolFailed,
    ToolSucceeded,
    encode_event,
)
from .fsm import RunState, apply
from .limits import PriceTable
from .tools import Tools

__all__ = ["Divergence", "ReplayReport", "replay_events"]


class Divergence(msgspec.Struct, frozen=True):
    seq: int
    expected: str  # the recorded event, as JSON
    got: str  # what the current code produced there, or why it could not continue


class ReplayReport(msgspec.Struct, frozen=True):
    run_id: str
    events: int
    divergence: Divergence | None = None

    @property
    def identical(self) -> bool:
        return self.divergence is None


# Outcomes that come from outside router's decisions, accepted as recorded when the
# current effect allows them.
_MODEL_OUTCOMES = (
    ModelRouted,
    ModelResponded,
    ContextSummarized,
    MemoryRecalled,
    RunFailed,
    LimitExceeded,
)
_TOOL_OUTCOMES = (ToolSucceeded, ToolFailed, LimitExceeded)
_ANYTIME = (RunResumed, RunParked, RunMigrated, RunForked, RunCancelled)


def _same(produced: Event, recorded: Event, encode: Callable[[Event], bytes]) -> bool:
    """Equal as stored: ``encode`` is the run's stored form (redaction included)."""
    return encode(replace(produced, at=recorded.at)) == encode_event(recorded)


def _text(event: Event) -> str:
    return encode_event(event).decode()


def replay_events(
    run_id: str,
    recorded: Sequence[Event],
    tools: Tools,
    prices: PriceTable,
    encode: Callable[[Event], bytes] = encode_event,
) -> ReplayReport:
    """Re-drive ``recorded`` with the given tools and prices; report the first divergence.
    ``encode`` turns an event into its stored form (the engine's, redaction included)."""
    state = RunState()
    expected_next: list[Event] = []  # events the current code has decided and not yet matched
    for seq, event in enumerate(recorded):
        if expected_next:
            produced = expected_next.pop(0)
            if not _same(produced, event, encode):
                return ReplayReport(run_id, seq, Divergence(seq, _text(event), _text(produced)))
            state = apply(state, event)
            continue
        if isinstance(event, RunResumed):
            decided = resume_events(state, event.at, event.owner)
            expected_next.extend(decided[1:])  # the interruption it decides, if any
            state = apply(state, event)
            continue
        if isinstance(event, (RunStarted, *_ANYTIME)):
            state = apply(state, event)
            if state.fault:
                return ReplayReport(run_id, seq, Divergence(seq, _text(event), state.fault))
            continue
        problem = _check(state, event, tools, prices, expected_next)
        if problem is not None:
            return ReplayReport(run_id, seq, Divergence(seq, _text(event), problem))
        if expected_next:  # the first decided event is this one's replacement
            produced = expected_next.pop(0)
            if not _same(produced, event, encode):
                return ReplayReport(run_id, seq, Divergence(seq, _text(event), _text(produced)))
        state = apply(state, event)
    if expected_next:
        return ReplayReport(
            run_id,
            len(recorded),
            Divergence(len(recorded), "(end of the log)", _text(expected_next[0])),
        )
    return ReplayReport(run_id, len(recorded))


def _check(
    state: RunState, event: Event, tools: Tools, prices: PriceTable, decided: list[Event]
) -> str | None:
    """Match ``event`` against the effect the current code wants next. Decisions are
    queued in ``decided``; an accepted outcome returns None; a mismatch returns why."""
    effect = next_effect(state)
    if isinstance(effect, Record):
        decided.append(effect.event)
        return None
    if isinstance(effect, DecideCalls):
        principal = state.principal
        decided.extend(tools.decide(call, principal, event.at)[0] for call in effect.calls)
        return None
    if isinstance(effect, CallModel):
        if not isinstance(event, _MODEL_OUTCOMES):
            return f"the model was to be called here, not {type(event).__name__}"
        if isinstance(event, ModelResponded | ContextSummarized):
            cost = prices.cost_nusd(event.model, event.usage)
            if cost != event.cost_nusd:
                return f"the price table now gives cost_nusd {cost}, not {event.cost_nusd}"
        forced = effect.limit if isinstance(effect, ForceAnswer) else ""
        if isinstance(event, ModelResponded) and event.forced != forced:
            return f"the answer here is forced by {forced!r}, not {event.forced!r}"
        return None
    if isinstance(effect, RunTools):
        if not isinstance(event, _TOOL_OUTCOMES):
            return f"tools were to run here, not {type(event).__name__}"
        return None
    if isinstance(effect, AwaitReview):
        if not isinstance(event, ReviewDecided):
            return f"the run waited for a review here, not {type(event).__name__}"
        return None
    if isinstance(effect, AwaitDecision):
        if not isinstance(event, ToolCallResolved):
            return f"the run waited for a reviewer here, not {type(event).__name__}"
        return None
    if isinstance(effect, Finish):
        return f"the run had already ended ({effect.phase})"
    return f"the run had not started; {type(event).__name__} cannot come first"
