"""A small MCP server over stdio, for examples/mcp_tools.py: a ledger with two tools.

It speaks the protocol directly (newline-delimited JSON-RPC), with input schemas written the
way TypeScript MCP servers write them (draft 7, additionalProperties false).
"""

from __future__ import annotations

import json
import sys

BALANCES = {"ops": 50_000, "vendor-17": 0}
DRAFT_7 = "http://json-schema.org/draft-07/schema#"
TOOLS = [
    {
        "name": "balance",
        "description": "An account's balance in cents.",
        "inputSchema": {
            "$schema": DRAFT_7,
            "type": "object",
            "additionalProperties": False,
            "properties": {"account": {"type": "string", "minLength": 1}},
            "required": ["account"],
        },
    },
    {
        "name": "transfer",
        "description": "Move cents between two accounts.",
        "inputSchema": {
            "$schema": DRAFT_7,
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "source": {"type": "string"},
                "target": {"type": "string"},
                "cents": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            },
            "required": ["source", "target", "cents"],
        },
    },
]


def answer(arguments: dict) -> dict:
    if "cents" in arguments:
        if BALANCES.get(arguments["source"], 0) < arguments["cents"]:
            return {"isError": True, "content": [{"type": "text", "text": "insufficient funds"}]}
        BALANCES[arguments["source"]] -= arguments["cents"]
        BALANCES[arguments["target"]] = BALANCES.get(arguments["target"], 0) + arguments["cents"]
    account = arguments.get("account", arguments.get("source"))
    return {
        "content": [{"type": "text", "text": f"{account}: {BALANCES.get(account, 0)} cents"}],
        "structuredContent": {"account": account, "cents": BALANCES.get(account, 0)},
    }


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if ident is None:
            continue
        if method == "initialize":
            result = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "ledger", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "tools/call":
            result = answer(message["params"]["arguments"])
        else:
            print(
                json.dumps(
                    {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": method}}
                ),
                flush=True,
            )
            continue
        print(json.dumps({"jsonrpc": "2.0", "id": ident, "result": result}), flush=True)


if __name__ == "__main__":
    main()
