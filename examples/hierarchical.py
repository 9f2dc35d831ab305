"""A hierarchy: a director delegates to a team lead, who delegates to two specialists.
Each delegation is a child run linked to its parent. Runs offline on scripted models.

    python examples/hierarchical.py [LOG.db]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from router import Engine, Principal, ScriptedModel, SqliteStore, Tools, load_run
from router.agents import agent_tool
from router.models.scripted import call, say


async def main(path: str) -> str:
    async with SqliteStore.open(path) as store:
        pricing = Engine(
            store, ScriptedModel([say("Plan B costs 40% less.")]), Tools([]), agent="pricing"
        )
        legal = Engine(
            store, ScriptedModel([say("Plan B needs a 30-day notice.")]), Tools([]), agent="legal"
        )
        lead = Engine(
            store,
            ScriptedModel(
                [
                    call("ask_pricing", '{"task": "Compare plan A and plan B."}'),
                    call("ask_legal", '{"task": "What does switching to plan B require?"}'),
                    say("Switch to plan B with 30 days' notice: it costs 40% less."),
                ]
            ),
            Tools(
                [
                    agent_tool(pricing, name="ask_pricing", description="Pricing questions."),
                    agent_tool(legal, name="ask_legal", description="Contract questions."),
                ]
            ),
            agent="team-lead",
        )
        director = Engine(
            store,
            ScriptedModel(
                [
                    call("ask_team", '{"task": "Should we switch plans?"}'),
                    say("Approved: switch to plan B."),
                ]
            ),
            Tools(
                [
                    agent_tool(
                        lead, name="ask_team", description="Ask the team for a recommendation."
                    )
                ]
            ),
            agent="director",
        )
        result = await director.start(
            "Decide on the plan for next year.", principal=Principal(id="cfo")
        )
        tree = []
        for summary in await store.runs():
            events, state, _ = await load_run(store, summary.run_id)
            parent = events[0].parent_run_id or "-"  # type: ignore[attr-defined]
            tree.append(
                f"{summary.run_id:<40} agent {events[0].agent:<10} parent {parent:<30} "  # type: ignore[attr-defined]
                f"{state.phase}: {state.output}"
            )
        tree.append(f"\ndirector: {result.phase}: {result.output}")
        return "\n".join(tree)


if __name__ == "__main__":
    db = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "hierarchy.db")
    print(anyio.run(main, db))
