"""Multi-agent patterns as graphs whose nodes run child agents (ids ``<graph run>/<node>.<step>``):
debate, reflection and negotiation. They are bounded by their rounds and by the graph run's
limits (a child's budget is what the graph run has left), and resume like any graph.
Supervisor and worker, and hierarchies of them, need no pattern: they are agents whose tools
are agents (``agent_tool``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core.fsm import Phase
from ..graph.definition import END, CompiledGraph, Graph, NodeContext, append
from ..run.engine import Engine
from .children import run_child

__all__ = ["debate", "negotiation", "reflection"]


async def _answer(agent: Engine, prompt: str, ctx: NodeContext, role: str) -> str:
    result = await run_child(agent, f"{ctx.run_id}/{ctx.key}", prompt, ctx)
    if result.phase is not Phase.DONE:
        raise RuntimeError(f"the {role} ended {result.phase}: {result.reason or 'no answer'}")
    return result.output


def debate(
    debaters: Sequence[Engine], judge: Engine, *, rounds: int = 2, name: str = "debate"
) -> CompiledGraph:
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
            return {
                "answers": [
                    f"debater {i} (round {state['round']}): "
                    f"{await _answer(agent, prompt, ctx, 'debater')}"
                ]
            }

        return speak

    async def decide(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        last = state["round"] + 1 >= rounds
        prompt = (
            f"{state['question']}\n\nAnswers:\n"
            + "\n".join(state["answers"])
            + (
                "\n\nGive the final answer as FINAL: <answer>."
                if last
                else "\n\nReply FINAL: <answer> or CONTINUE: <why>."
            )
        )
        verdict = await _answer(judge, prompt, ctx, "judge")
        done = last or verdict.strip().upper().startswith("FINAL")
        return {
            "round": state["round"] + 1,
            "verdict": verdict.split(":", 1)[-1].strip() if done else "",
            "done": done,
        }

    g.add_node("open", open_round)
    names = [f"debater{i}" for i in range(len(debaters))]
    for node, agent in zip(names, debaters, strict=True):
        g.add_node(node, debater(names.index(node), agent))
    g.add_node("judge", decide)
    g.start("open")
    g.fanout("open", names, then="judge")
    g.route("judge", lambda s: END if s["done"] else "open", targets={"open", END})
    return g.compile()


def reflection(
    agent: Engine,
    critic: Engine | Callable[[str], str | None],
    *,
    max_rounds: int = 3,
    name: str = "reflection",
) -> CompiledGraph:
    """The agent drafts an answer to the ``task``; the critic (a check returning feedback
    or None, or an agent replying ``OK`` or its feedback) reviews it; the agent revises
    until the critic accepts or ``max_rounds`` drafts were made. State: task, draft,
    feedback, round, accepted."""
    g = Graph(name)

    async def draft(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        prompt = state["task"] + (
            f"\n\nRevise your last draft:\n{state['draft']}\nFeedback: {state['feedback']}"
            if state.get("feedback")
            else ""
        )
        return {
            "draft": await _answer(agent, prompt, ctx, "writer"),
            "round": state.get("round", 0) + 1,
        }

    async def critique(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        if isinstance(critic, Engine):
            said = await _answer(
                critic,
                f"Review this answer to '{state['task']}':\n{state['draft']}\n"
                "Reply OK if it is right, else say what to fix.",
                ctx,
                "critic",
            )
            feedback = None if said.strip().upper().startswith("OK") else said
        else:
            feedback = critic(state["draft"])
        return {"accepted": feedback is None, "feedback": feedback or ""}

    g.add_node("draft", draft)
    g.add_node("critique", critique)
    g.start("draft")
    g.edge("draft", "critique")
    g.route(
        "critique",
        lambda s: END if s["accepted"] or s["round"] >= max_rounds else "draft",
        targets={"draft", END},
    )
    return g.compile()


def negotiation(
    first: Engine,
    second: Engine,
    *,
    agreed: Callable[[str], bool],
    max_exchanges: int = 6,
    name: str = "negotiation",
) -> CompiledGraph:
    """Two agents exchange offers on the ``topic``, each seeing the exchange so far, until
    ``agreed(offer)`` holds or ``max_exchanges`` offers were made. State: topic, offers,
    exchanges, agreed."""
    g = Graph(name, reducers={"offers": append})

    def party(label: str, agent: Engine) -> Any:
        async def offer(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
            history = "\n".join(state.get("offers", []))
            said = await _answer(
                agent, f"{state['topic']}\n\nSo far:\n{history or '(nothing yet)'}", ctx, label
            )
            return {
                "offers": [f"{label}: {said}"],
                "exchanges": state.get("exchanges", 0) + 1,
                "agreed": agreed(said),
            }

        return offer

    def next_after(other: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: END if s["agreed"] or s["exchanges"] >= max_exchanges else other

    g.add_node("first", party("first", first))
    g.add_node("second", party("second", second))
    g.start("first")
    g.route("first", next_after("second"), targets={"second", END})
    g.route("second", next_after("first"), targets={"first", END})
    return g.compile()
