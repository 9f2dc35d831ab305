"""Tools from an MCP server, and a model routing policy, on the SQLite log. Runs offline: the
ledger server is a local process and the models are scripted (one of them always down).

    python examples/mcp_tools.py [LOG.db]

The model first sends arguments the server's inputSchema refuses (router rejects them
before the server sees them), then a valid transfer, which the run's principal may make.
The primary model is down, so every turn falls back to the backup, recorded as model_routed.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from router import Engine, Policy, Principal, SqliteStore, Tools, load_run
from router.core.events import Message
from router.core.protocols import ModelTurn
from router.core.timeline import render
from router.mcp import McpClient
from router.models.routing import Candidate, ModelRouter
from router.models.scripted import ScriptedModel, call, say

SERVER = [sys.executable, str(Path(__file__).with_name("ledger_mcp_server.py"))]


class Down:
    """A model whose provider is unreachable."""

    name = "primary"

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        raise ConnectionError("connection refused")


async def main(path: str) -> str:
    backup = ScriptedModel(
        [
            call(
                "transfer", '{"source": "ops", "target": "vendor-17", "cents": "12000"}'
            ),  # a string: refused
            call("transfer", '{"source": "ops", "target": "vendor-17", "cents": 12000}'),
            call("balance", '{"account": "ops"}'),
            say("Paid vendor-17 120.00; ops has 380.00 left."),
        ],
        name="backup",
    )
    model = ModelRouter([Candidate(Down()), Candidate(backup)])
    async with McpClient.stdio(SERVER) as ledger, SqliteStore.open(path) as store:
        tools = Tools(
            await ledger.tools(
                permissions={"transfer": {"payments:write"}}, idempotent={"balance"}
            ),
            policy=Policy({"treasurer": {"payments:write"}}),
        )
        engine = Engine(store, model, tools, agent="treasury")
        result = await engine.start(
            "Pay vendor-17 120.00 from ops.",
            principal=Principal(id="ann", roles=frozenset({"treasurer"})),
        )
        events, state, _ = await load_run(store, result.run_id)
        return render(result.run_id, events, state)


if __name__ == "__main__":
    log = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "log.db")
    print(anyio.run(main, log))
