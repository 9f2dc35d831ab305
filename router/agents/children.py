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
from ..run.children import start_child
from ..run.engine import Engine, RunResult

__all__ = ["agent_tool", "handoff_tool", "run_child"]


async def run_child(
    worker: Engine, run_id: str, task: str | Sequence[Message], parent: ToolContext | NodeContext
) -> RunResult:
    """Start the child agent run ``run_id`` of the run ``parent`` serves, or resume it if
    it exists (see ``router.run.children``: on the parent's runtime, within its budget,
    with its redaction, its spend reported, never left waiting)."""
    result: RunResult = await start_child(worker, run_id, task, parent)
    return result


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
        if result.forced:  # its last answer, asked for at a limit: said to be one
            note = f"[the {name} agent stopped at a limit ({result.forced}): its last answer]"
            answer = f"{result.output}\n{note}"
            return ToolOutput(result=answer, child_run_id=child_id)
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
        if result.phase is not Phase.DONE:  # a forced last answer included: it is not the run's
            raise RuntimeError(
                f"the {name} handoff ended {result.phase}: {result.reason or 'no answer'}"
            )
        return ToolOutput(result=result.output, child_run_id=child_id, final=True)

    hand_over.__doc__ = description
    return Tool(hand_over, name=name, description=description, idempotent=True)
