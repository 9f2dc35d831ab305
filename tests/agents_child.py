"""A supervisor with nested workers in a child process that the kill test SIGKILLs at chosen
points; after each marker it waits for the parent's "go".

usage: agents_child.py LOG LEDGER RUN_ID   (LEDGER is unused)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio
from kill_support import Observed, marker

from router import Engine, Message, ModelTurn, Principal, Runtime, ScriptedModel, SqliteStore, Tools
from router.agents import agent_tool
from router.core.protocols import Store
from router.models.scripted import call, say


def scripted(label: str, turns: list[ModelTurn]) -> ScriptedModel:
    def answer(messages: Sequence[Message]) -> ModelTurn:
        step = sum(m.role == "assistant" for m in messages)
        marker(f"model {label} {step}")
        return turns[min(step, len(turns) - 1)]

    return ScriptedModel(answer)


async def main(log: str, ledger: str, run_id: str) -> None:
    async with SqliteStore.open(log) as sqlite_store:
        store: Store = Observed(sqlite_store)  # type: ignore[assignment]
        specialist = Engine(
            Runtime(store, owner="kill-test"),
            scripted("specialist", [say("fact")]),
            Tools([]),
            agent="s",
        )
        lead = Engine(
            Runtime(store, owner="kill-test"),
            scripted(
                "lead", [call("ask", '{"task": "a"}'), call("ask", '{"task": "b"}'), say("lead ok")]
            ),
            Tools([agent_tool(specialist, name="ask", description="ask")]),
            agent="lead",
        )
        top = Engine(
            Runtime(store, owner="kill-test"),
            scripted(
                "top", [call("team", '{"task": "x"}'), call("team", '{"task": "y"}'), say("top ok")]
            ),
            Tools([agent_tool(lead, name="team", description="team")]),
            agent="top",
        )
        if await sqlite_store.read(run_id):
            result = await top.resume(run_id)
        else:
            result = await top.start("go", principal=Principal(id="ops"), run_id=run_id)
    print(f"result {result.phase}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
