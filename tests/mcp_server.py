"""A real MCP server, built with the official SDK, that the MCP tests start as a process.

python mcp_server.py stdio
python mcp_server.py http PORT
"""

from __future__ import annotations

import sys
from typing import Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

server = MCPServer("ledger")
BALANCES = {"alice": 500, "bob": 100}


class Receipt(BaseModel):
    source: str
    target: str
    cents: int
    balance: int


@server.tool()
def transfer(source: str, target: str, cents: int = Field(ge=1, le=100_000)) -> Receipt:
    """Move cents from one account to another."""
    if BALANCES.get(source, 0) < cents:
        raise ToolError(f"{source} has only {BALANCES.get(source, 0)} cents")
    BALANCES[source] -= cents
    BALANCES[target] = BALANCES.get(target, 0) + cents
    return Receipt(source=source, target=target, cents=cents, balance=BALANCES[source])


@server.tool()
def balance(account: str, currency: Literal["USD", "EUR"] = "USD") -> str:
    """An account's balance as text."""
    return f"{account}: {BALANCES.get(account, 0)} cents {currency}"


@server.tool(name="audit.log")
def audit_log(limit: int = 10) -> list[str]:
    """The latest audit entries."""
    return [f"entry {i}" for i in range(min(limit, 3))]


@server.tool()
async def stall() -> str:
    """Never answers (for timeouts)."""
    await anyio.Event().wait()
    return "unreachable"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", port=int(sys.argv[2]), host="127.0.0.1")
