"""Tools from MCP servers: the client (stdio, or streamable HTTP from ``router.mcp.http``)."""

from __future__ import annotations

from .client import PROTOCOL_VERSION, McpClient, McpToolFailed

__all__ = ["PROTOCOL_VERSION", "McpClient", "McpToolFailed"]
