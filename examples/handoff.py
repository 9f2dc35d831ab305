"""Handoff: a front-desk agent hands the conversation to a billing agent, whose answer is the
run's answer. Runs offline on scripted models.

    python examples/handoff.py [LOG.db]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from router import Engine, Principal, ScriptedModel, SqliteStore, Tools
from router.agents import handoff_tool
from router.models.scripted import call, say


async def main(path: str) -> str:
    async with SqliteStore.open(path) as store:
        billing = Engine(
            store,
            ScriptedModel([say("Your duplicate charge of 1,200.00 will be refunded by Friday.")]),
            Tools([]),
            agent="billing",
        )
        desk = Engine(
            store,
            ScriptedModel(
                [call("to_billing", '{"note": "Customer asks about a duplicate charge."}')]
            ),
            Tools(
                [
                    handoff_tool(
                        billing, name="to_billing", description="Hand billing questions over."
                    )
                ]
            ),
            agent="front-desk",
        )
        result = await desk.start(
            "I was charged twice in March!", principal=Principal(id="customer-42")
        )
        return f"{result.phase}: {result.output}"


if __name__ == "__main__":
    db = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "handoff.db")
    print(anyio.run(main, db))
