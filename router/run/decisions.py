"""Decisions by people on stored runs: on calls interrupted by a crash, and on runs (agent
or graph) awaiting review. Each takes the run's lease while it reads the run and records
the decision through the run's one log writer, sealed with the run's recorded redaction
(a reviewer's edited arguments and a supplied result are redacted like anything else)."""

from __future__ import annotations

from typing import Any, Literal

from ..core.events import GraphStarted, ReviewDecided, ReviewRequested, ToolCallResolved
from ..core.fsm import Phase, RunState, apply, fold
from ..core.graph_fsm import GraphPhase, fold_graph
from ..core.protocols import Store
from ..core.tools import encode_result
from ..errors import DecisionError
from .log import open_log
from .runtime import Runtime

__all__ = ["resolve_call", "review_graph_run", "review_run"]


def _encoded(run_id: str, call_id: str, value: Any, what: str) -> str:
    try:
        return encode_result(value)
    except (TypeError, ValueError) as exc:
        raise DecisionError(run_id, call_id, f"the {what} is not JSON-encodable: {exc}") from exc


async def resolve_call(
    store_or_runtime: Store | Runtime,
    run_id: str,
    call_id: str,
    decision: Literal["retry", "supply", "fail"],
    *,
    result: Any = None,
    by: str = "",
    note: str = "",
) -> RunState:
    """Record a reviewer's decision on an interrupted call; returns the run's new state.

    retry: start the call again when the run resumes. supply: take ``result`` (any
    JSON-encodable value) as the call's result without running it. fail: end the run.
    Raises DecisionError if the call is not waiting for a decision, LeaseHeld if another
    process holds the run.
    """
    runtime = Runtime.of(store_or_runtime)
    events, log = await open_log(runtime, run_id)
    try:
        state = fold(events)
        if state.phase is not Phase.INTERRUPTED:
            raise DecisionError(run_id, call_id, f"the run is {state.phase}, not interrupted")
        if not any(c.call.id == call_id and c.status == "interrupted" for c in state.calls):
            waiting = ", ".join(c.call.id for c in state.calls if c.status == "interrupted")
            raise DecisionError(
                run_id, call_id, f"no such call waits for a decision (waiting: {waiting})"
            )
        encoded = (
            _encoded(run_id, call_id, result, "supplied result") if decision == "supply" else ""
        )
        event = ToolCallResolved(
            at=runtime.clock.now_us(),
            call_id=call_id,
            decision=decision,
            result=encoded,
            by=by,
            note=note,
        )
        log.add(event)
        new = apply(state, event)
        await log.close(new)  # a worker continues the run from here
        return new
    finally:
        await log.release()


async def review_run(
    store_or_runtime: Store | Runtime,
    run_id: str,
    decision: Literal["approve", "reject"],
    *,
    by: str = "",
    note: str = "",
    arguments: Any = None,
) -> RunState:
    """Approve or reject what an agent run waits on (``awaiting_review``); returns its new state.

    Approving held tool calls lets them be validated and run; ``arguments`` (any JSON value,
    for a single held call) replaces what the model proposed. Rejecting them feeds the
    refusal back to the model. For a held answer, approve ends the run with it, reject
    sends the model back to work with the note. For the other rules, approve continues and
    reject fails the run. ``Engine.resume`` continues the run afterwards.
    Raises DecisionError if the run is not waiting for a review.
    """
    runtime = Runtime.of(store_or_runtime)
    events, log = await open_log(runtime, run_id)
    try:
        state = fold(events)
        if state.phase is not Phase.AWAITING_REVIEW:
            raise DecisionError(run_id, "", f"the run is {state.phase}, not awaiting review")
        edited = ""
        if arguments is not None:
            if decision != "approve":
                raise DecisionError(run_id, "", "only an approval can edit the arguments")
            edited = _encoded(run_id, "", arguments, "edited arguments")
        held = tuple(c.call.id for c in state.calls if c.status == "held")
        event = ReviewDecided(
            at=runtime.clock.now_us(),
            decision=decision,
            rule=state.pending_review,
            call_ids=held,
            by=by,
            note=note,
            arguments=edited,
        )
        new = apply(state, event)
        if new.fault:
            raise DecisionError(run_id, "", new.fault)
        log.add(event)
        await log.close(new)  # a worker continues the run from here
        return new
    finally:
        await log.release()


async def review_graph_run(
    store_or_runtime: Store | Runtime,
    run_id: str,
    decision: Literal["approve", "reject"],
    *,
    by: str = "",
    note: str = "",
) -> str:
    """Approve or reject what a graph run waits on (a node to review before or after);
    returns the rule decided. ``GraphEngine.resume`` continues the run afterwards.
    Raises DecisionError if the run is not waiting for a review."""
    runtime = Runtime.of(store_or_runtime)
    events, log = await open_log(runtime, run_id)
    try:
        if not isinstance(events[0], GraphStarted):
            raise DecisionError(run_id, "", "the run is not a graph run")
        state = fold_graph(None, events)
        pending = next((e for e in reversed(events) if isinstance(e, ReviewRequested)), None)
        if state.phase is not GraphPhase.AWAITING_REVIEW or pending is None:
            raise DecisionError(run_id, "", f"the graph run is {state.phase}, not awaiting review")
        decided = ReviewDecided(
            at=runtime.clock.now_us(),
            decision=decision,
            rule=pending.rule,
            call_ids=pending.call_ids,
            by=by,
            note=note,
        )
        log.add(decided)
        await log.close(fold_graph(None, [*events, decided]))  # a worker continues it
        return pending.rule
    finally:
        await log.release()
