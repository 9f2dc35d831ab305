"""Three graphs of agents, each bounded and each a graph run on the log:
debate (two debaters and a judge), reflection (a writer and a checker) and negotiation
(a buyer and a seller). Runs offline on scripted models.

    python examples/debate_reflection_negotiation.py [LOG.db]
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio

from router import Engine, Message, ModelTurn, Principal, ScriptedModel, SqliteStore, Tools
from router.agents import debate, negotiation, reflection
from router.graph import GraphEngine
from router.models.scripted import say

WHO = Principal(id="analyst")


def scripted(store: SqliteStore, agent: str, *answers: str) -> Engine:
    """An agent that gives its answers in turn, one per run."""
    given = iter(answers)

    def answer(messages: Sequence[Message]) -> ModelTurn:
        return say(next(given))

    return Engine(store, ScriptedModel(answer), Tools([]), agent=agent)


async def main(path: str) -> str:
    out = []
    async with SqliteStore.open(path) as store:
        flow = debate(
            [
                scripted(
                    store, "optimist", "Yes: demand grows 20%.", "Yes, even at half that growth."
                ),
                scripted(store, "skeptic", "No: costs grow faster.", "Only if costs are hedged."),
            ],
            scripted(
                store, "judge", "CONTINUE: costs are unclear.", "FINAL: expand, with cost hedging."
            ),
            rounds=3,
        )
        result = await GraphEngine(store, flow).start(
            {"question": "Should we expand?", "round": 0, "answers": []}, principal=WHO
        )
        out.append(
            f"debate: {result.phase} after {result.state['round']} rounds: "
            f"{result.state['verdict']}"
        )

        def no_numbers_without_units(text: str) -> str | None:
            return None if "EUR" in text else "give the amount with its currency"

        flow = reflection(
            scripted(store, "writer", "The fee is 150.", "The fee is 150 EUR."),
            no_numbers_without_units,
        )
        result = await GraphEngine(store, flow).start({"task": "State the fee."}, principal=WHO)
        out.append(
            f"reflection: {result.phase} after {result.state['round']} drafts: "
            f"{result.state['draft']}"
        )

        flow = negotiation(
            scripted(store, "buyer", "I offer 800.", "I offer 900."),
            scripted(store, "seller", "I ask 1000.", "Deal at 900."),
            agreed=lambda offer: offer.startswith("Deal"),
            max_exchanges=6,
        )
        result = await GraphEngine(store, flow).start(
            {"topic": "The price of the license."}, principal=WHO
        )
        out.append(
            f"negotiation: {result.phase} after {result.state['exchanges']} offers: "
            f"{result.state['offers'][-1]}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    db = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "patterns.db")
    print(anyio.run(main, db))
