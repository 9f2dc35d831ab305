"""Supervisor and workers: a coordinator delegates to a researcher and a writer, each a child
run with its own log, then answers. Runs offline on scripted models.

    python examples/supervisor_worker.py [LOG.db]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

from router import (
    Engine,
    Limits,
    Price,
    PriceTable,
    Principal,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    load_run,
)
from router.agents import agent_tool
from router.core.timeline import render
from router.models.scripted import call, say

PRICES = PriceTable({"scripted": Price(3.0, 15.0)})
U = Usage(input_tokens=400, output_tokens=40)


async def main(path: str) -> str:
    async with SqliteStore.open(path) as store:
        researcher = Engine(
            store,
            ScriptedModel([say("Refunds of duplicate charges are due within 5 days.", usage=U)]),
            Tools([]),
            prices=PRICES,
            agent="researcher",
        )
        writer = Engine(
            store,
            ScriptedModel([say("Dear customer, your refund of 1,050.00 is on its way.", usage=U)]),
            Tools([]),
            prices=PRICES,
            agent="writer",
        )
        supervisor = Engine(
            store,
            ScriptedModel(
                [
                    call(
                        "research",
                        '{"task": "What is the refund policy for duplicate charges?"}',
                        usage=U,
                    ),
                    call(
                        "write",
                        '{"task": "Write to the customer about a 1,050.00 refund."}',
                        usage=U,
                    ),
                    say("Policy checked and the customer is informed.", usage=U),
                ]
            ),
            Tools(
                [
                    agent_tool(
                        researcher, name="research", description="Answer a research question."
                    ),
                    agent_tool(writer, name="write", description="Write a message to a customer."),
                ]
            ),
            prices=PRICES,
            agent="supervisor",
            limits=Limits(max_cost_usd=1.0),
        )
        result = await supervisor.start(
            "Handle the duplicate charge of customer 42.", principal=Principal(id="ops")
        )
        lines = []
        for summary in await store.runs():
            events, state, _ = await load_run(store, summary.run_id)
            lines.append(render(summary.run_id, events, state))
        lines.append(
            f"\nsupervisor: {result.phase}, {result.usage.total_tokens} tokens "
            f"(children included), ${result.cost_usd:.6f}"
        )
        return "\n\n".join(lines)


if __name__ == "__main__":
    db = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "supervisor.db")
    print(anyio.run(main, db))
