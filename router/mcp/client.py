"""Tools from an MCP server, over stdio or streamable HTTP, registered through their inputSchema.

An MCP server's tools become ordinary router tools: their ``inputSchema`` is compiled by
router.schema at registration (a keyword router cannot enforce is refused there), and
every call goes through the same validation, access policy, timeouts, retries and log as
a tool written in Python. What the server returns is the tool's result: its
``structuredContent`` when it sends one, else its text. A result flagged ``isError``, a
JSON-RPC error or a lost connection fails the call, and the model is told why.

    async with McpClient.stdio(["python", "server.py"]) as server:
        tools = Tools(await server.tools(permissions={"transfer": {"payments:write"}}))

Streamable HTTP needs the ``mcp`` extra (httpx); stdio needs nothing beyond the core.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, final

import anyio
import anyio.abc
import msgspec

from ..core.tools import Retry, Tool
from ..errors import McpError, SchemaError
from ..schema.compiler import SchemaOptions

__all__ = ["PROTOCOL_VERSION", "McpClient", "McpToolFailed"]

PROTOCOL_VERSION = "2025-06-18"
_CLIENT_INFO = {"name": "router", "version": "0.1.0"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpToolFailed(Exception):
    """The server ran the tool and reported an error (``isError``); the message is its text."""


class _Channel(Protocol):
    async def send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Send one JSON-RPC message; for a request, return its response."""
        ...


@final
class McpClient:
    """A session with one MCP server. Open it with ``stdio`` or ``http``."""

    def __init__(self, channel: _Channel, server: str, timeout_s: float) -> None:
        self._channel = channel
        self._ids = itertools.count(1)
        self.server = server
        self.timeout_s = timeout_s
        self.info: dict[str, Any] = {}
        self.refused: dict[str, str] = {}  # tools left out by ``tools(skip_refused=True)``, and why

    @classmethod
    @asynccontextmanager
    async def stdio(
        cls,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float = 30.0,
    ) -> AsyncIterator[McpClient]:
        """Start the server process and talk to it over its stdin and stdout. The process
        is ended when the block exits."""
        try:
            process = await anyio.open_process(
                list(command), env=dict(env) if env else None, cwd=cwd, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            raise McpError(" ".join(command), f"cannot start the server: {exc}") from exc
        try:
            async with process, anyio.create_task_group() as tg:
                channel = _StdioChannel(process, " ".join(command))
                tg.start_soon(channel.read_forever)
                client = cls(channel, " ".join(command), timeout_s)
                try:
                    await client._initialize()
                    yield client
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        if process.stdin is not None:
                            await process.stdin.aclose()
                        with anyio.move_on_after(2):
                            await process.wait()
                        if process.returncode is None:
                            process.kill()
        except (
            BaseExceptionGroup
        ) as group:  # the reader task never fails: the error is the caller's own
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    @classmethod
    @asynccontextmanager
    async def http(
        cls, url: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 30.0
    ) -> AsyncIterator[McpClient]:
        """Talk to a server's streamable HTTP endpoint (``http://host:port/mcp``)."""
        from .http import HttpChannel

        async with HttpChannel(url, dict(headers or {}), timeout_s) as channel:
            client = cls(channel, url, timeout_s)
            await client._initialize()
            yield client

    async def _initialize(self) -> None:
        self.info = await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": _CLIENT_INFO,
            },
        )
        await self._channel.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> Any:
        """One JSON-RPC request; its result, or McpError."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            message["params"] = params
        try:
            with anyio.fail_after(timeout_s or self.timeout_s):
                response = await self._channel.send(message)
        except (TimeoutError, anyio.get_cancelled_exc_class()):
            await self._cancelled(message["id"])
            raise
        if response is None:
            raise McpError(self.server, f"no response to {method}")
        if "error" in response:
            error = response["error"] if isinstance(response["error"], dict) else {}
            raise McpError(
                self.server, f"{method}: {error.get('message', 'error')} (code {error.get('code')})"
            )
        return response.get("result", {})

    async def _cancelled(self, request_id: int) -> None:
        """Tell the server we stopped waiting (a timeout, a cancelled run), so that it can
        stop the work; best effort."""
        notice = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "router stopped waiting"},
        }
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            try:
                await self._channel.send(notice)
            except McpError:
                pass  # the server is gone: nothing to cancel

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the server offers, following its pagination."""
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            tools.extend(page.get("tools", []))
            cursor = page.get("nextCursor")
            if not cursor:
                return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call a tool: its structured content, else its text (or its content blocks).
        Raises McpToolFailed when the server reports the call failed."""
        result = await self.request(
            "tools/call", {"name": name, "arguments": arguments}, timeout_s=float("inf")
        )
        content = result.get("content", [])
        texts = [
            c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"
        ]
        if result.get("isError"):
            raise McpToolFailed("\n".join(texts) or "the tool reported an error")
        if "structuredContent" in result:
            return result["structuredContent"]
        if len(texts) == len(content):
            return "\n".join(texts)
        return content

    async def tools(
        self,
        *,
        include: Iterable[str] | None = None,
        permissions: Mapping[str, Iterable[str]] | None = None,
        idempotent: Iterable[str] = (),
        timeout_s: float | None = None,
        retry: Retry | None = None,
        prefix: str = "",
        schema_options: SchemaOptions | None = None,
        skip_refused: bool = False,
    ) -> list[Tool]:
        """The server's tools as router tools, their inputSchemas compiled now.

        include: only these (MCP) tool names. permissions: per MCP tool name, what the
        run's principal must hold. idempotent: tools that are safe to run twice after a
        crash (the others are committed before they run, and an unsure call waits for a
        person). A name that is not a valid router tool name has other characters
        replaced by "_"; ``prefix`` is put in front of every name.

        A tool whose inputSchema router cannot enforce raises SchemaError, or with
        ``skip_refused`` is left out and listed, with the reason, in ``self.refused``.
        """
        wanted = set(include) if include is not None else None
        permissions = permissions or {}
        safe = set(idempotent)
        out: list[Tool] = []
        specs = await self.list_tools()
        for spec in specs:
            name = spec.get("name", "")
            if wanted is not None and name not in wanted:
                continue
            try:
                out.append(
                    Tool(
                        self._caller(name),
                        name=_UNSAFE.sub("_", prefix + name)[:64],
                        description=spec.get("description") or name,
                        parameters=spec.get("inputSchema") or {"type": "object"},
                        schema_options=schema_options,
                        permissions=permissions.get(name, ()),
                        idempotent=name in safe,
                        timeout_s=timeout_s,
                        retry=retry,
                    )
                )
            except SchemaError as exc:
                if not skip_refused:
                    raise
                self.refused[name] = str(exc)
        missing = wanted - {spec.get("name") for spec in specs} if wanted is not None else set()
        if missing:
            raise McpError(self.server, f"no such tools: {', '.join(sorted(missing))}")
        return out

    def _caller(self, name: str) -> Callable[[dict[str, Any]], Any]:
        async def call(arguments: dict[str, Any]) -> Any:
            return await self.call_tool(name, arguments)

        call.__name__ = _UNSAFE.sub("_", name)
        return call


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


@final
class _StdioChannel:
    """Newline-delimited JSON-RPC over a child process's stdin and stdout; requests are
    matched to responses by id, so that calls can run concurrently."""

    def __init__(self, process: anyio.abc.Process, server: str) -> None:
        self.process = process
        self.server = server
        self.waiting: dict[Any, tuple[anyio.Event, list[dict[str, Any]]]] = {}
        self.closed = ""
        self.lock = anyio.Lock()

    async def send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if self.closed:
            raise McpError(self.server, self.closed)
        slot: tuple[anyio.Event, list[dict[str, Any]]] | None = None
        if "id" in message and "method" in message:  # a request: wait for its response
            slot = (anyio.Event(), [])
            self.waiting[message["id"]] = slot
        assert self.process.stdin is not None
        try:
            async with self.lock:
                await self.process.stdin.send(_encoder.encode(message) + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise McpError(self.server, f"the server's stdin is closed: {exc}") from exc
        if slot is None:
            return None
        try:
            await slot[0].wait()
        finally:
            self.waiting.pop(message["id"], None)
        if not slot[1]:
            raise McpError(self.server, self.closed or "the server went away")
        return slot[1][0]

    async def read_forever(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        await self._dispatch(line)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        self.closed = "the server process exited"
        for event, _ in list(self.waiting.values()):
            event.set()

    async def _dispatch(self, line: bytes) -> None:
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError:
            return  # not a JSON-RPC message (a server printing to stdout by mistake)
        if not isinstance(message, dict):
            return
        ident = message.get("id")
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            return  # a notification, or an id no request of ours can have
        if "method" in message:  # a request from the server: ping, or one router does not offer
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": ident}
            if message["method"] == "ping":
                reply["result"] = {}
            else:
                reply["error"] = {
                    "code": -32601,
                    "message": f"router does not offer {message['method']}",
                }
            try:
                await self.send(reply)
            except McpError:
                pass  # the server is going away; the reader sees its stdout close
            return
        slot = self.waiting.get(ident)
        if slot is not None:
            slot[1].append(message)
            slot[0].set()
