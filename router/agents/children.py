"""Child agents: agents as tools, handoffs, and the one way any run starts a child agent.

``agent_tool(worker, name=..., description=...)`` turns an Engine into a tool. Calling it
starts a child run whose id is ``<parent run>/<call id>``, so a parent resumed after a
crash resumes the same child instead of starting it again. The child's log records its
parent (``run_started.parent_run_id``); the parent's ``tool_succeeded`` (or
``tool_failed``) records the child (``child_run_id``) and the tokens and cost it spent,
which count against the parent's budgets. A child's limits are lowered to what its parent
has left when it starts, so the parent's ceiling binds the child while it runs, and it
inherits its parent's redaction policy. A child runs inside its parent's task: cancelling
the parent cancels the child, and a child that stops without finishing (interrupted,
waiting for review) is ended with ``run_cancelled`` before its parent goes on, so no child
run is left behind. A handoff is a tool whose child answers for its parent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import anyio

from ..core.events import Message
from ..core.fsm import Phase
from ..core.tools import Tool, ToolContext, ToolOutput
from ..graph.definition import NodeContext
from ..run.engine import Engine, RunResult
from ..run.log import end_run, load_run

__all__ = ["agent_tool", "handoff_tool", "run_child"]


async def run_child(
    worker: Engine, run_id: str, task: str | Sequence[Message], parent: ToolContext | NodeContext
) -> RunResult:
    """Start the child run ``run_id`` of the run ``parent`` serves, or resume it if it
    exists, on the parent's runtime (its store, clock, ids, cipher and observers). The
    child's limits are lowered to what the parent has left, it inherits the parent's
    redaction, and what it spent is reported to the parent's meter, even when it is
    cancelled. A child that stops to wait (for a decision or a review) is ended, so that it
    does not outlive its parent."""
    engine = worker if parent.runtime is None else worker.on(parent.runtime)
    budget = parent.budget.after(parent.meter)
    try:
        if await engine.store.read(run_id):
            result = await engine.resume(run_id)
        elif budget.exhausted:
            raise RuntimeError(
                f"run {parent.run_id} has no {budget.exhausted} left for the child run {run_id}"
            )
        else:
            result = await engine.start(
                task,
                principal=parent.principal,
                run_id=run_id,
                parent_run_id=parent.run_id,
                limits=budget.bind(worker.limits),
                redaction=parent.redaction,
            )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _report_spend(engine, run_id, parent)
        raise
    if result.phase in (Phase.INTERRUPTED, Phase.AWAITING_REVIEW):
        await end_run(
            engine.runtime,
            run_id,
            f"its parent {parent.run_id} went on without it ({result.phase})",
        )
    if parent.meter is not None:
        parent.meter.report(run_id, result.usage, round(result.cost_usd * 1e9))
    return result


async def _report_spend(engine: Engine, run_id: str, parent: ToolContext | NodeContext) -> None:
    """What a child that did not return (cancelled, or failed) spent, from its log."""
    if parent.meter is None or not await engine.store.read(run_id):
        return
    _, state, _ = await load_run(engine.store, run_id, engine.runtime.cipher)
    parent.meter.report(run_id, state.usage, state.cost_nusd)


def agent_tool(
    worker: Engine,
    *,
    name: str,
    description: str,
    permissions: frozenset[str] = frozenset(),
    timeout_s: float | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> Tool:
    """A tool that delegates a task, in words, to the ``worker`` agent as a child run.

    timeout_s: how long the child may take (default: the parent's tool timeout); a child
        that overruns is cancelled, recorded in its log, and the parent hears it timed out.
    limiter: shared by several agent tools, caps how many child agents are active at once.
    """

    async def delegate(task: str, context: ToolContext) -> ToolOutput:
        child_id = f"{context.run_id}/{context.call_id}"
        if limiter is None:
            result = await run_child(worker, child_id, task, context)
        else:
            async with limiter:
                result = await run_child(worker, child_id, task, context)
        if result.phase is not Phase.DONE:
            raise RuntimeError(
                f"the {name} agent ended {result.phase}: {result.reason or 'no answer'}"
            )
        return ToolOutput(result=result.output, child_run_id=child_id)

    delegate.__doc__ = description
    return Tool(
        delegate,
        name=name,
        description=description,
        permissions=permissions,
        idempotent=True,
        timeout_s=timeout_s,
    )


def handoff_tool(
    target: Engine,
    *,
    name: str,
    description: str,
    context: Literal["conversation", "task"] = "conversation",
) -> Tool:
    """A tool that hands the conversation over to ``target``: its answer is the run's answer.

    context: "conversation" gives the target the messages so far and the note; "task" gives
    it only the note the model wrote.
    """

    async def hand_over(note: str, ctx: ToolContext) -> ToolOutput:
        child_id = f"{ctx.run_id}/{ctx.call_id}"
        opening: list[Message] = (
            [m for m in ctx.messages if m.role in ("system", "user")]
            if context == "conversation"
            else []
        )
        opening.append(Message(role="user", content=note))
        result = await run_child(target, child_id, opening, ctx)
        if result.phase is not Phase.DONE:
            raise RuntimeError(
                f"the {name} handoff ended {result.phase}: {result.reason or 'no answer'}"
            )
        return ToolOutput(result=result.output, child_run_id=child_id, final=True)

    hand_over.__doc__ = description
    return Tool(hand_over, name=name, description=description, idempotent=True)
