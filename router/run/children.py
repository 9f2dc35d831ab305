"""Child runs, of agents and of graphs alike: the one way a run starts another.

A child runs on its parent's runtime (its store, clock, ids, cipher and observers). Its
limits are lowered to what the parent has left, it inherits the parent's redaction, what it
spent is reported to the parent's meter (read from its log when it did not return:
cancelled or failed), and a child that stops to wait (for a decision or a review) is ended,
so that it does not outlive its parent. A resumed parent resumes the same child.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from ..core.events import Principal
from ..core.limits import Budget, Meter
from ..core.protocols import Store
from ..core.redaction import Redaction
from .log import WAITING, end_run, fold_run, open_log
from .runtime import Runtime

__all__ = ["Child", "Parent", "start_child"]


class Parent(Protocol):
    """What a tool call (``ToolContext``) or a graph task (``NodeContext``) gives the child
    runs it starts."""

    @property
    def run_id(self) -> str: ...
    @property
    def principal(self) -> Principal: ...
    @property
    def budget(self) -> Budget: ...
    @property
    def meter(self) -> Meter | None: ...
    @property
    def redaction(self) -> Redaction | None: ...
    @property
    def runtime(self) -> Any: ...


class Child(Protocol):
    """An agent's ``Engine`` or a graph's ``GraphEngine``."""

    @property
    def store(self) -> Store: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def limits(self) -> Any: ...
    @property
    def start(self) -> Callable[..., Awaitable[Any]]: ...  # (opening, *, principal, run_id, ...)
    @property
    def resume(self) -> Callable[..., Awaitable[Any]]: ...
    @property
    def on(self) -> Callable[[Runtime], Any]: ...


async def start_child(engine: Child, run_id: str, opening: Any, parent: Parent) -> Any:
    """Start the child run ``run_id`` of the run ``parent`` serves with ``opening`` (an
    agent's messages, a graph's state), or resume it if it exists; returns its result.
    Raises RuntimeError, starting nothing, if the parent has no budget left."""
    child = engine if parent.runtime is None else engine.on(parent.runtime)
    budget = parent.budget.after(parent.meter)
    try:
        if await child.store.read(run_id):
            result = await child.resume(run_id)
        elif budget.exhausted:
            raise RuntimeError(
                f"run {parent.run_id} has no {budget.exhausted} left for the child run {run_id}"
            )
        else:
            result = await child.start(
                opening,
                principal=parent.principal,
                run_id=run_id,
                parent_run_id=parent.run_id,
                limits=budget.bind(engine.limits),
                redaction=parent.redaction,
            )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _report_from_log(child.runtime, run_id, parent)
        raise
    if result.phase in WAITING:
        reason = f"its parent {parent.run_id} went on without it ({result.phase})"
        await end_run(child.runtime, run_id, reason)
    if parent.meter is not None:
        parent.meter.report(run_id, result.usage, round(result.cost_usd * 1e9))
    return result


async def _report_from_log(runtime: Runtime, run_id: str, parent: Parent) -> None:
    """What a child that did not return spent, from its log."""
    if parent.meter is None or not await runtime.store.read(run_id):
        return
    events, _ = await open_log(runtime, run_id, lease=False)
    state = fold_run(events)
    parent.meter.report(run_id, state.usage, state.cost_nusd)
