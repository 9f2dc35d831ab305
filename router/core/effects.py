"""What the agent loop's driver must do next. Pure: no I/O, no clock, no randomness.

``next_effect(state)`` reads a run's folded state (``router.core.fsm``) and names the one effect
to perform: call the model, decide proposed calls, run started calls, record an event the
core decided (a limit crossed, a review to ask for, a fault), wait, or stop. Limits are
checked here, before every effect, so crossing one ends the run before router calls
anything again. ``transition(state, event)`` is the pure, total pair of the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .events import (
    Event,
    LimitExceeded,
    ReviewRequested,
    RunFailed,
    RunInterrupted,
    RunResumed,
    ToolCall,
    ToolStarted,
)
from .fsm import (
    AWAITING_MODEL,
    FINAL_ANSWER,
    INTERRUPTED,
    NEW,
    RUNNING_TOOLS,
    TERMINAL,
    CallState,
    Phase,
    RunState,
    apply,
)
from .limits import call_signature, check_spend

__all__ = [
    "AwaitDecision",
    "AwaitReview",
    "CallModel",
    "DecideCalls",
    "Effect",
    "Finish",
    "ForceAnswer",
    "Idle",
    "Record",
    "RunTools",
    "check_limits",
    "check_reviews",
    "next_effect",
    "resume_events",
    "transition",
]


# --- effects: what the driver must do next -------------------------------------------


class Effect(msgspec.Struct, frozen=True, gc=False):
    pass


class Idle(Effect, frozen=True):
    """Nothing to do: the run has not started."""


class CallModel(Effect, frozen=True):
    pass


class ForceAnswer(CallModel, frozen=True):
    """Ask the model for its last answer, offering no tools: the run reached ``limit``
    (``Limits.final_answer``)."""

    limit: str


class DecideCalls(Effect, frozen=True):
    """Validate and authorize these proposed calls; record a decision for each."""

    calls: tuple[ToolCall, ...]


class RunTools(Effect, frozen=True):
    """Run these started calls and record their results in this order."""

    calls: tuple[ToolStarted, ...]


class Record(Effect, frozen=True):
    """Append an event the core decided (a limit crossed, a failure)."""

    event: Event


class AwaitDecision(Effect, frozen=True):
    call_ids: tuple[str, ...]


class AwaitReview(Effect, frozen=True):
    rule: str


class Finish(Effect, frozen=True):
    phase: Phase


_CALL_MODEL = CallModel()
_IDLE = Idle()


def next_effect(state: RunState) -> Effect:
    """What the driver must do next. Limits are checked here, before every effect."""
    phase = state.phase
    if phase in TERMINAL:
        return Finish(phase)
    if phase is NEW:
        return _IDLE
    if state.fault:
        return Record(RunFailed(at=state.last_at, code="invalid_transition", reason=state.fault))
    if phase is FINAL_ANSWER:  # only a clock or a spent budget stops the last answer
        exceeded = check_spend(state, stepping=True)
        return ForceAnswer(state.forced) if exceeded is None else Record(exceeded)
    if phase is not RUNNING_TOOLS:
        exceeded = check_limits(state)
        if exceeded is not None:
            return Record(exceeded)
        if phase is AWAITING_MODEL:
            review = check_reviews(state)
            return _CALL_MODEL if review is None else Record(review)
        if phase is INTERRUPTED:
            return AwaitDecision(tuple(c.call.id for c in state.calls if c.status == "interrupted"))
        return AwaitReview(state.pending_review)
    calls = state.calls
    if len(calls) == 1:  # most turns hold one call: nothing to gather
        c = calls[0]
        proposed: tuple[ToolCall, ...] = (c.call,) if c.status == "proposed" else ()
        fresh: tuple[ToolCall, ...] = proposed if c.attempt == 0 else ()
        started: tuple[ToolStarted, ...] = (
            (c.started,) if c.status == "started" and c.started is not None else ()
        )
    else:
        proposed, fresh, started = _gather(calls)
    exceeded = check_limits(state, fresh)
    if exceeded is not None:
        return Record(exceeded)
    if not proposed:
        return RunTools(started)
    before = state.review.before_tools
    if before:
        needs = tuple(
            [
                c.call.id
                for c in calls
                if c.status == "proposed" and not c.approved and c.call.name in before
            ]
        )
        if needs:
            return Record(
                ReviewRequested(
                    at=state.last_at,
                    rule="before_tool",
                    call_ids=needs,
                    reason="the tool needs a reviewer's approval",
                )
            )
    return DecideCalls(proposed)


def _gather(
    calls: tuple[CallState, ...],
) -> tuple[tuple[ToolCall, ...], tuple[ToolCall, ...], tuple[ToolStarted, ...]]:
    """A turn of several calls: the calls to decide, those among them never decided before
    (which the limits check) and the calls to run."""
    gathered: list[ToolCall] = []
    running: list[ToolStarted] = []
    retried = False
    for c in calls:
        status = c.status
        if status == "proposed":
            gathered.append(c.call)
            if c.attempt:
                retried = True
        elif status == "started" and c.started is not None:
            running.append(c.started)
    proposed = tuple(gathered)
    fresh = (
        tuple([c.call for c in calls if c.status == "proposed" and c.attempt == 0])
        if retried
        else proposed
    )
    return proposed, fresh, tuple(running)


def check_reviews(state: RunState) -> ReviewRequested | None:
    """Before the next model call: a rule that wants a person to look first, or None."""
    rules, at = state.review, state.last_at
    if state.after_review:
        return ReviewRequested(
            at=at,
            rule="after_tool",
            call_ids=state.after_review,
            reason="results of tools that need review before the model sees them",
        )
    if rules.tool_failures is not None and state.failures_in_a_row >= rules.tool_failures:
        return ReviewRequested(
            at=at,
            rule="tool_failures",
            reason=f"{state.failures_in_a_row} tool calls in a row failed",
        )
    if (
        rules.cost_over_usd is not None
        and not state.cost_reviewed
        and state.cost_nusd > round(rules.cost_over_usd * 1e9)
    ):
        return ReviewRequested(
            at=at,
            rule="cost",
            reason=f"the run has cost ${state.cost_nusd / 1e9:.6f}, over ${rules.cost_over_usd:g}",
        )
    return None


def transition(state: RunState, event: Event) -> tuple[RunState, tuple[Effect, ...]]:
    """The pure, total transition function: the new state and what to do next."""
    new = apply(state, event)
    return new, (next_effect(new),)


def resume_events(state: RunState, at: int, owner: str) -> list[Event]:
    """The events that open a resumed run: who resumed it and, if calls that are not
    idempotent were started without a recorded result, the interruption that waits for a
    reviewer. Idempotent calls in that position simply run again."""
    events: list[Event] = [RunResumed(at=at, owner=owner)]
    if state.phase is RUNNING_TOOLS and not state.fault:
        unsure = tuple(
            c.call.id
            for c in state.calls
            if c.status == "started" and c.started is not None and not c.started.idempotent
        )
        if unsure:
            events.append(
                RunInterrupted(
                    at=at,
                    call_ids=unsure,
                    reason="started before a crash with no recorded result; "
                    "the tool is not idempotent",
                )
            )
    return events


def check_limits(state: RunState, fresh: Sequence[ToolCall] = ()) -> LimitExceeded | None:
    """The first limit an agent run has crossed, as the event that records it, or None.

    fresh: in running_tools, the turn's calls never decided before (``next_effect``
    finds them as it reads the turn); the proposal limits check them.
    """
    phase = state.phase
    limits = state.limits
    stepping = phase is AWAITING_MODEL
    keep = 1 if limits.final_answer else 0  # the last step is the final answer's
    if state.budgeted or (stepping and state.steps >= limits.max_steps - keep):  # else none
        exceeded = check_spend(state, stepping, keep)
        if exceeded is not None:
            return exceeded
    if (  # a person decides instead where the tool_failures review rule asks one to
        stepping
        and state.failures_in_a_row >= limits.max_failures_in_a_row
        and state.review.tool_failures is None
    ):
        return LimitExceeded(
            at=state.last_at,
            limit="max_failures_in_a_row",
            value=state.failures_in_a_row,
            ceiling=limits.max_failures_in_a_row,
            detail="tool calls failed one after another (a timeout on every attempt included)",
        )
    if phase == "running_tools" and fresh:
        exceeded = _check_proposals(state, fresh)
        if exceeded is not None:
            return exceeded
    if state.rejected > limits.max_rejected_calls:
        return LimitExceeded(
            at=state.last_at,
            limit="max_rejected_calls",
            value=state.rejected,
            ceiling=limits.max_rejected_calls,
            detail="the model kept proposing calls that were invalid, unknown or denied",
        )
    return None


def _looped(state: RunState, call: ToolCall, repeats: int) -> LimitExceeded:
    limits = state.limits
    return LimitExceeded(
        at=state.last_at,
        limit="loop_detected",
        value=repeats,
        ceiling=limits.max_repeats,
        detail=f"tool {call.name!r} proposed with the same arguments {repeats} times "
        f"in the last {limits.loop_window} calls",
    )


def _check_proposals(state: RunState, fresh: Sequence[ToolCall]) -> LimitExceeded | None:
    """Limits that a model turn's new calls cross before any of them runs."""
    limits, at = state.limits, state.last_at
    proposed = state.tool_calls + len(fresh)
    if proposed > limits.max_tool_calls:
        return LimitExceeded(
            at=at,
            limit="max_tool_calls",
            value=proposed,
            ceiling=limits.max_tool_calls,
            detail=f"{len(fresh)} calls proposed with {state.tool_calls} already made",
        )
    window = state.recent_calls
    if len(fresh) == 1 and len(state.calls) == 1 and window:  # most turns: the fold's last
        repeats = window.count(window[-1])
        return _looped(state, fresh[0], repeats) if repeats >= limits.max_repeats else None
    if len(fresh) == len(state.calls) and len(fresh) <= len(window):
        signatures: Sequence[str] = window[len(window) - len(fresh) :]  # the turn's, last
    else:
        signatures = [call_signature(c) for c in fresh]
    for call, signature in zip(fresh, signatures):  # noqa: B905 (equal lengths)
        repeats = window.count(signature)
        if repeats >= limits.max_repeats:
            return _looped(state, call, repeats)
    return None
