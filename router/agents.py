"""Agents that use agents: a child agent as a tool of its parent.

``agent_tool(worker, name=..., description=...)`` turns an Engine into a tool. Calling it
starts a child run whose id is ``<parent run>/<call id>``, so a parent resumed after a
crash resumes the same child instead of starting it again. The child's log records its
parent (``run_started.parent_run_id``); the parent's ``tool_succeeded`` records the child
(``child_run_id``) and the tokens and cost it spent, which count against the parent's
budgets. A child runs inside its parent's task: cancelling the parent cancels the child,
and a child that stops without finishing (interrupted, waiting for review) is ended with
``run_cancelled`` before its parent goes on, so no child run is left behind.

Supervisor and worker, and hierarchies of them, are agents whose tools are agents.
"""

from __future__ import annotations

from .engine import Engine
from .events import RunCancelled
from .fsm import Phase
from .runlog import load_run, sealer
from .tools import Tool, ToolContext, ToolOutput

__all__ = ["agent_tool"]


def agent_tool(
    worker: Engine,
    *,
    name: str,
    description: str,
    permissions: frozenset[str] = frozenset(),
) -> Tool:
    """A tool that delegates a task, in words, to the ``worker`` agent as a child run."""

    async def delegate(task: str, context: ToolContext) -> ToolOutput:
        child_id = f"{context.run_id}/{context.call_id}"
        if await worker.store.read(child_id):
            result = await worker.resume(child_id)
        else:
            result = await worker.start(task, principal=context.principal, run_id=child_id,
                                        parent_run_id=context.run_id)
        if result.phase is not Phase.DONE:
            if result.phase in (Phase.INTERRUPTED, Phase.AWAITING_REVIEW):
                await _end(worker, child_id, f"its parent {context.run_id} went on without it ({result.phase})")
            raise RuntimeError(f"the {name} agent ended {result.phase}: {result.reason or 'no answer'}")
        return ToolOutput(result=result.output, usage=result.usage, cost_nusd=round(result.cost_usd * 1e9),
                          child_run_id=child_id)

    delegate.__doc__ = description
    return Tool(delegate, name=name, description=description, permissions=permissions, idempotent=True)


async def _end(worker: Engine, run_id: str, reason: str) -> None:
    """Record that a paused child run ends with its parent."""
    owner = f"{worker.owner}/end"
    await worker.store.acquire_lease(run_id, owner, 30.0)
    try:
        _, state, chain = await load_run(worker.store, run_id, worker.cipher)
        if not state.terminal:
            await worker.store.append(chain.seal([RunCancelled(at=worker.clock.now_us(), reason=reason)],
                                                 sealer(worker.cipher)))
    finally:
        await worker.store.release_lease(run_id, owner)
