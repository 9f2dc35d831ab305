"""A minimal MCP server over stdio, written against the protocol itself: it pages its tool
list, pings the client before answering it, and offers one tool whose inputSchema uses a
keyword router refuses. Its hidden tools "wait" (never answers), "cancellations" (the
request ids the client cancelled) and "garbled" (answers after lines a client must skip)
let tests see cancellation notices arrive and a client survive a sloppy server."""

from __future__ import annotations

import json
import sys

TOOLS = [
    {
        "name": "echo",
        "description": "Echo a word.",
        "inputSchema": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
    },
    {
        "name": "strict_echo",
        "description": "Echo, with an unevaluatedProperties rule.",
        "inputSchema": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "unevaluatedProperties": False,
        },
    },
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    cancelled: list[int] = []
    for line in sys.stdin:
        message = json.loads(line)
        method, ident = message.get("method"), message.get("id")
        if method == "notifications/cancelled":
            cancelled.append(message["params"]["requestId"])
        if method is None or ident is None:
            continue  # a notification, or the client's answer to our ping
        if method == "initialize":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {
                        "protocolVersion": message["params"]["protocolVersion"],
                        "capabilities": {"tools": {}},
                        "serverInfo": {"name": "raw", "version": "1"},
                    },
                }
            )
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": "server-ping", "method": "ping"})
            page = int(message.get("params", {}).get("cursor") or 0)
            result: dict = {"tools": [TOOLS[page]]}
            if page + 1 < len(TOOLS):
                result["nextCursor"] = str(page + 1)
            send({"jsonrpc": "2.0", "id": ident, "result": result})
        elif method == "tools/call" and message["params"]["name"] == "garbled":
            send(
                {"jsonrpc": "2.0", "id": {"not": "an id"}, "result": {}}
            )  # no request of ours has this id
            sys.stdout.write("not JSON at all\n")
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {"content": [{"type": "text", "text": "fine"}]},
                }
            )
        elif method == "tools/call" and message["params"]["name"] == "wait":
            continue  # never answers
        elif method == "tools/call" and message["params"]["name"] == "cancellations":
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {"content": [], "structuredContent": {"ids": cancelled}},
                }
            )
        elif method == "tools/call":
            word = message["params"]["arguments"].get("word", "")
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "result": {"content": [{"type": "text", "text": word}]},
                }
            )
        else:
            send(
                {
                    "jsonrpc": "2.0",
                    "id": ident,
                    "error": {"code": -32601, "message": f"no method {method}"},
                }
            )


if __name__ == "__main__":
    main()
