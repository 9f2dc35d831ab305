"""Decisions by people: on calls interrupted by a crash, and on runs awaiting review."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio

from .clock import Clock, RandomIds, SystemClock
from .errors import DecisionError
from .chain import Chain, verify
from .errors import RunNotFound
from .events import GraphStarted, ReviewDecided, ReviewRequested, ToolCallResolved
from .fsm import Phase, RunState, apply
from .protocols import Cipher, Store
from .runlog import decode_run, load_run, sealer
from .tools import encode_result

__all__ = ["resolve_call", "review_graph_run", "review_run"]


@asynccontextmanager
async def _holding(store: Store, run_id: str, owner: str | None = None) -> AsyncIterator[None]:
    """Hold the run's lease while a person's decision is recorded, so that no engine
    advances the run meanwhile."""
    owner = owner or RandomIds().new_id("reviewer")
    await store.acquire_lease(run_id, owner, 30.0)
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await store.release_lease(run_id, owner)


async def resolve_call(
    store: Store,
    run_id: str,
    call_id: str,
    decision: Literal["retry", "supply", "fail"],
    *,
    result: Any = None,
    by: str = "",
    note: str = "",
    clock: Clock | None = None,
    owner: str | None = None,
    cipher: Cipher | None = None,
) -> RunState:
    """Record a reviewer's decision on an interrupted call; returns the run's new state.

    retry: start the call again when the run resumes. supply: take ``result`` (any
    JSON-encodable value) as the call's result without running it. fail: end the run.
    Raises DecisionError if the call is not waiting for a decision.
    """
    clock = clock or SystemClock()
    async with _holding(store, run_id, owner):
        _, state, chain = await load_run(store, run_id, cipher)
        if state.phase is not Phase.INTERRUPTED:
            raise DecisionError(run_id, call_id, f"the run is {state.phase}, not interrupted")
        if not any(c.call.id == call_id and c.status == "interrupted" for c in state.calls):
            waiting = ", ".join(c.call.id for c in state.calls if c.status == "interrupted")
            raise DecisionError(run_id, call_id, f"no such call waits for a decision (waiting: {waiting})")
        encoded = ""
        if decision == "supply":
            try:
                encoded = encode_result(result)
            except (TypeError, ValueError) as exc:
                raise DecisionError(run_id, call_id, f"the supplied result is not JSON-encodable: {exc}") from exc
        event = ToolCallResolved(
            at=clock.now_us(), call_id=call_id, decision=decision, result=encoded, by=by, note=note,
        )
        sealed = chain.seal([event], sealer(cipher))
        await store.append(sealed)
        return apply(state, event)


async def review_run(
    store: Store,
    run_id: str,
    decision: Literal["approve", "reject"],
    *,
    by: str = "",
    note: str = "",
    arguments: Any = None,
    clock: Clock | None = None,
    cipher: Cipher | None = None,
) -> RunState:
    """Approve or reject what a run waits on (``awaiting_review``); returns its new state.

    Approving held tool calls lets them be validated and run; ``arguments`` (any JSON value,
    for a single held call) replaces what the model proposed. Rejecting them feeds the
    refusal back to the model. For a held answer, approve ends the run with it, reject
    sends the model back to work with the note. For the other rules, approve continues and
    reject fails the run. ``Engine.resume`` continues the run afterwards.
    Raises DecisionError if the run is not waiting for a review.
    """
    clock = clock or SystemClock()
    async with _holding(store, run_id):
        _, state, chain = await load_run(store, run_id, cipher)
        if state.phase is not Phase.AWAITING_REVIEW:
            raise DecisionError(run_id, "", f"the run is {state.phase}, not awaiting review")
        edited = ""
        if arguments is not None:
            if decision != "approve":
                raise DecisionError(run_id, "", "only an approval can edit the arguments")
            try:
                edited = encode_result(arguments)
            except (TypeError, ValueError) as exc:
                raise DecisionError(run_id, "", f"the edited arguments are not JSON-encodable: {exc}") from exc
        held = tuple(c.call.id for c in state.calls if c.status == "held")
        event = ReviewDecided(at=clock.now_us(), decision=decision, rule=state.pending_review, call_ids=held, by=by,
                              note=note, arguments=edited)
        new = apply(state, event)
        if new.fault:
            raise DecisionError(run_id, "", new.fault)
        await store.append(chain.seal([event], sealer(cipher)))
        return new


async def review_graph_run(
    store: Store,
    run_id: str,
    decision: Literal["approve", "reject"],
    *,
    by: str = "",
    note: str = "",
    clock: Clock | None = None,
    cipher: Cipher | None = None,
) -> str:
    """Approve or reject what a graph run waits on (a node to review before or after);
    returns the rule decided. ``GraphEngine.resume`` continues the run afterwards.
    Raises DecisionError if the run is not waiting for a review."""
    clock = clock or SystemClock()
    async with _holding(store, run_id):
        stored = await store.read(run_id)
        if not stored:
            raise RunNotFound(run_id)
        verify(stored)
        events = decode_run(stored, cipher)
        pending = next((e for e in reversed(events) if isinstance(e, ReviewRequested | ReviewDecided)), None)
        if not isinstance(events[0], GraphStarted) or not isinstance(pending, ReviewRequested):
            raise DecisionError(run_id, "", "the run is not a graph run awaiting review")
        event = ReviewDecided(at=clock.now_us(), decision=decision, rule=pending.rule, call_ids=pending.call_ids,
                              by=by, note=note)
        await store.append(Chain.after(run_id, stored).seal([event], sealer(cipher)))
        return pending.rule
