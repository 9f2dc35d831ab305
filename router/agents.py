"""Agents that use agents: child agents as tools, handoffs, and graphs of agents.

``agent_tool(worker, name=..., description=...)`` turns an Engine into a tool. Calling it
starts a child run whose id is ``<parent run>/<call id>``, so a parent resumed after a
crash resumes the same child instead of starting it again. The child's log records its
parent (``run_started.parent_run_id``); the parent's ``tool_succeeded`` records the child
(``child_run_id``) and the tokens and cost it spent, which count against the parent's
budgets. A child's limits are lowered to what its parent has left when it starts, so the
parent's ceiling binds the child while it runs, and it inherits its parent's redaction
policy, so a secret the parent keeps off disk stays off disk in the child's log too. A
child runs inside its parent's task: cancelling the parent cancels the child,
and a child that stops without finishing (interrupted, waiting for review) is ended with
``run_cancelled`` before its parent goes on, so no child run is left behind.

Supervisor and worker, and hierarchies of them, are agents whose tools are agents. A
handoff is a tool whose child answers for its parent. Debate, reflection and negotiation
are graphs whose nodes run child agents (ids ``<graph run>/<node>.<step>``), so they are
bounded by their rounds and by the graph run's limits, and resume like any graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio

from .events import Message, RunCancelled
from .fsm import Phase, fold
from .graph.definition import END, CompiledGraph, Graph, NodeContext, append
from .run.engine import Engine, RunResult
from .run.log import open_log
from .tools import Tool, ToolContext, ToolOutput

__all__ = ["agent_tool", "debate", "handoff_tool", "negotiation", "reflection", "run_child"]


async def run_child(
    worker: Engine, run_id: str, task: str | Sequence[Message], parent: ToolContext | NodeContext
) -> RunResult:
    """Start the child run ``run_id`` of the run ``parent`` serves, or resume it if it
    exists. The child's limits are lowered to the parent's budget, it inherits the parent's
    redaction, and what it spent is reported to the parent's meter. A child that stops to
    wait (for a decision or a review) is ended, so that it does not outlive its parent."""
    if await worker.store.read(run_id):
        result = await worker.resume(run_id)
    else:
        result = await worker.start(task, principal=parent.principal, run_id=run_id, parent_run_id=parent.run_id,
                                    limits=parent.budget.bind(worker.limits), redaction=parent.redaction)
    if result.phase in (Phase.INTERRUPTED, Phase.AWAITING_REVIEW):
        await _end(worker, run_id, f"its parent {parent.run_id} went on without it ({result.phase})")
    if parent.meter is not None:
        parent.meter.add(result.usage, round(result.cost_usd * 1e9), run_id)
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
        if result.phase is not Phase.DONE:
            raise RuntimeError(f"the {name} agent ended {result.phase}: {result.reason or 'no answer'}")
        return ToolOutput(result=result.output, child_run_id=child_id)

    delegate.__doc__ = description
    return Tool(delegate, name=name, description=description, permissions=permissions, idempotent=True,
                timeout_s=timeout_s)


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
        opening: list[Message] = [m for m in ctx.messages if m.role in ("system", "user")] if context == "conversation" else []
        opening.append(Message(role="user", content=note))
        result = await run_child(target, child_id, opening, ctx)
        if result.phase is not Phase.DONE:
            raise RuntimeError(f"the {name} handoff ended {result.phase}: {result.reason or 'no answer'}")
        return ToolOutput(result=result.output, child_run_id=child_id, final=True)

    hand_over.__doc__ = description
    return Tool(hand_over, name=name, description=description, idempotent=True)


async def _answer(agent: Engine, prompt: str, ctx: NodeContext, role: str) -> str:
    result = await run_child(agent, f"{ctx.run_id}/{ctx.key}", prompt, ctx)
    if result.phase is not Phase.DONE:
        raise RuntimeError(f"the {role} ended {result.phase}: {result.reason or 'no answer'}")
    return result.output


def debate(debaters: Sequence[Engine], judge: Engine, *, rounds: int = 2, name: str = "debate") -> CompiledGraph:
    """Debaters answer the ``question`` in parallel, seeing earlier rounds; the judge replies
    ``FINAL: <answer>`` or ``CONTINUE: <why>``. After ``rounds`` rounds the judge's word is
    final. State: question, round, answers (all rounds), verdict."""
    g = Graph(name, reducers={"answers": append})

    async def open_round(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    def debater(i: int, agent: Engine) -> Any:
        async def speak(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
            earlier = "\n".join(state["answers"])
            prompt = state["question"] + (f"\n\nEarlier answers:\n{earlier}" if earlier else "")
            return {"answers": [f"debater {i} (round {state['round']}): {await _answer(agent, prompt, ctx, 'debater')}"]}
        return speak

    async def decide(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        last = state["round"] + 1 >= rounds
        prompt = (f"{state['question']}\n\nAnswers:\n" + "\n".join(state["answers"])
                  + ("\n\nGive the final answer as FINAL: <answer>." if last
                     else "\n\nReply FINAL: <answer> or CONTINUE: <why>."))
        verdict = await _answer(judge, prompt, ctx, "judge")
        done = last or verdict.strip().upper().startswith("FINAL")
        return {"round": state["round"] + 1, "verdict": verdict.split(":", 1)[-1].strip() if done else "", "done": done}

    g.add_node("open", open_round)
    names = [f"debater{i}" for i in range(len(debaters))]
    for node, agent in zip(names, debaters):
        g.add_node(node, debater(names.index(node), agent))
    g.add_node("judge", decide)
    g.start("open")
    g.fanout("open", names, then="judge")
    g.route("judge", lambda s: END if s["done"] else "open", targets={"open", END})
    return g.compile()


def reflection(
    agent: Engine, critic: Engine | Callable[[str], str | None], *, max_rounds: int = 3, name: str = "reflection"
) -> CompiledGraph:
    """The agent drafts an answer to the ``task``; the critic (a check returning feedback
    or None, or an agent replying ``OK`` or its feedback) reviews it; the agent revises
    until the critic accepts or ``max_rounds`` drafts were made. State: task, draft,
    feedback, round, accepted."""
    g = Graph(name)

    async def draft(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        prompt = state["task"] + (f"\n\nRevise your last draft:\n{state['draft']}\nFeedback: {state['feedback']}"
                                  if state.get("feedback") else "")
        return {"draft": await _answer(agent, prompt, ctx, "writer"), "round": state.get("round", 0) + 1}

    async def critique(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        if isinstance(critic, Engine):
            said = await _answer(critic, f"Review this answer to '{state['task']}':\n{state['draft']}\n"
                                         "Reply OK if it is right, else say what to fix.", ctx, "critic")
            feedback = None if said.strip().upper().startswith("OK") else said
        else:
            feedback = critic(state["draft"])
        return {"accepted": feedback is None, "feedback": feedback or ""}

    g.add_node("draft", draft)
    g.add_node("critique", critique)
    g.start("draft")
    g.edge("draft", "critique")
    g.route("critique", lambda s: END if s["accepted"] or s["round"] >= max_rounds else "draft",
            targets={"draft", END})
    return g.compile()


def negotiation(
    first: Engine, second: Engine, *, agreed: Callable[[str], bool], max_exchanges: int = 6, name: str = "negotiation"
) -> CompiledGraph:
    """Two agents exchange offers on the ``topic``, each seeing the exchange so far, until
    ``agreed(offer)`` holds or ``max_exchanges`` offers were made. State: topic, offers,
    exchanges, agreed."""
    g = Graph(name, reducers={"offers": append})

    def party(label: str, agent: Engine) -> Any:
        async def offer(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
            history = "\n".join(state.get("offers", []))
            said = await _answer(agent, f"{state['topic']}\n\nSo far:\n{history or '(nothing yet)'}", ctx, label)
            return {"offers": [f"{label}: {said}"], "exchanges": state.get("exchanges", 0) + 1, "agreed": agreed(said)}
        return offer

    def next_after(other: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: END if s["agreed"] or s["exchanges"] >= max_exchanges else other

    g.add_node("first", party("first", first))
    g.add_node("second", party("second", second))
    g.start("first")
    g.route("first", next_after("second"), targets={"second", END})
    g.route("second", next_after("first"), targets={"first", END})
    return g.compile()


async def _end(worker: Engine, run_id: str, reason: str) -> None:
    """Record that a paused child run ends with its parent."""
    events, log = await open_log(worker.runtime, run_id)
    try:
        if not fold(events).terminal:
            log.add(RunCancelled(at=worker.runtime.clock.now_us(), reason=reason))
        await log.flush(last=True)
    finally:
        await log.release()
