"""Decisions by people on stored runs: on calls interrupted by a crash, and on runs (agent
or graph) awaiting review. Each takes the run's lease while it reads the run and records
the decision through the run's one log writer, sealed with the run's recorded redaction
(a reviewer's edited arguments and a supplied result are redacted like anything else)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec
import orjson

from ..core.events import (
    GraphStarted,
    ReviewDecided,
    ReviewRequested,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
)
from ..core.fsm import Phase, RunState, apply, fold
from ..core.graph_fsm import GraphPhase, fold_graph
from ..core.protocols import Store
from ..core.tools import Tools, encode_result
from ..errors import DecisionError
from .log import open_log
from .runtime import Runtime

__all__ = ["resolve_call", "review_graph_run", "review_run"]


def _edited(
    run_id: str,
    state: RunState,
    decision: str,
    edit: Mapping[str, Any] | None,
    arguments: Any,
    tools: Tools | None,
) -> tuple[str, tuple[str, ...]]:
    """The held call's arguments after a reviewer's edit, and what the edit changed."""
    if decision != "approve":
        raise DecisionError(run_id, "", "only an approval can edit the arguments")
    if edit is not None and arguments is not None:
        raise DecisionError(
            run_id, "", "edit patches named arguments, arguments replaces them: not both"
        )
    held = [c.call for c in state.calls if c.status == "held"]
    if len(held) != 1:
        raise DecisionError(run_id, "", f"an edit needs exactly one held call, not {len(held)}")
    call = held[0]
    if edit is not None:
        proposed = orjson.loads(call.arguments) if call.arguments else {}
        if not isinstance(proposed, dict) or not isinstance(edit, Mapping):
            raise DecisionError(run_id, call.id, "edit patches an object's named arguments")
        value, names = {**proposed, **edit}, tuple(sorted(edit))
    else:
        value, names = arguments, ("*",)
    encoded = _encoded(run_id, call.id, value, "edited arguments")
    if tools is not None:
        trial = msgspec.structs.replace(call, arguments=encoded)
        refused = tools.decide(trial, state.principal, state.last_at)[0]
        if isinstance(refused, ToolCallRejected | ToolCallDenied):
            raise DecisionError(
                run_id, call.id, f"the edited call would be refused: {_why(refused)}"
            )
    return encoded, names


def _why(event: ToolCallRejected | ToolCallDenied) -> str:
    if isinstance(event, ToolCallDenied):
        return f"{event.principal} lacks {', '.join(event.missing)}"
    return f"{event.code}" + (f" at {event.path}" if event.path else "") + f": {event.reason}"


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
    edit: Mapping[str, Any] | None = None,
    arguments: Any = None,
    tools: Tools | None = None,
) -> RunState:
    """Approve or reject what an agent run waits on (``awaiting_review``); returns its new state.

    Approving held tool calls lets them be validated and run. For a single held call,
    ``edit`` patches the named arguments (the rest stay as the model proposed them) and
    ``arguments`` replaces them whole; the decision records which (``edited``). With the
    agent's ``tools`` the edited call is checked first, and an edit the tool would refuse
    (a wrong type, a missing field, a permission) raises DecisionError naming the path,
    recording nothing. Rejecting held calls feeds the refusal back to the model. For a
    held answer, approve ends the run with it, reject sends the model back to work with
    the note. For the other rules, approve continues and reject fails the run.
    ``Engine.resume`` continues the run afterwards. Raises DecisionError if the run is
    not waiting for a review.
    """
    runtime = Runtime.of(store_or_runtime)
    events, log = await open_log(runtime, run_id)
    try:
        state = fold(events)
        if state.phase is not Phase.AWAITING_REVIEW:
            raise DecisionError(run_id, "", f"the run is {state.phase}, not awaiting review")
        edited: str = ""
        names: tuple[str, ...] = ()
        if edit is not None or arguments is not None:
            edited, names = _edited(run_id, state, decision, edit, arguments, tools)
        held = tuple(c.call.id for c in state.calls if c.status == "held")
        event = ReviewDecided(
            at=runtime.clock.now_us(),
            decision=decision,
            rule=state.pending_review,
            call_ids=held,
            by=by,
            note=note,
            arguments=edited,
            edited=names,
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
