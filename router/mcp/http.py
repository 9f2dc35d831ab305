"""MCP's streamable HTTP transport for router.mcp (needs the ``mcp`` extra: httpx).

Each JSON-RPC message is a POST to the server's endpoint. The server answers a request
with a JSON body or with a stream of server-sent events that carries the response (and
possibly its own requests first, such as a ping). The session id the server assigns at
initialization goes with every later message, and the session is ended on close.
"""

from __future__ import annotations

from typing import Any, final

import httpx
import msgspec

from ..core.streams import read_events
from ..errors import McpError

__all__ = ["HttpChannel"]

_encoder = msgspec.json.Encoder()


@final
class HttpChannel:
    def __init__(self, url: str, headers: dict[str, str], timeout_s: float) -> None:
        self.url = url
        self.headers = headers
        self.session = ""
        self.protocol = ""
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, read=None))

    async def __aenter__(self) -> HttpChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.session:
                await self.client.delete(self.url, headers=self._headers())
        except httpx.HTTPError:
            pass  # ending the session is a courtesy; the server expires it anyway
        finally:
            await self.client.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **self.headers,
        }
        if self.session:
            headers["mcp-session-id"] = self.session
        if self.protocol:
            headers["mcp-protocol-version"] = self.protocol
        return headers

    async def send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        try:
            async with self.client.stream(
                "POST", self.url, content=_encoder.encode(message), headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    body = (await response.aread())[:200].decode("utf-8", "replace")
                    raise McpError(self.url, f"HTTP {response.status_code}: {body}")
                self.session = response.headers.get("mcp-session-id", self.session)
                if "id" not in message or "method" not in message:
                    return None
                reply = await self._reply(response, message["id"])
        except httpx.HTTPError as exc:
            raise McpError(self.url, f"{type(exc).__name__}: {exc}") from exc
        if message["method"] == "initialize":
            self.protocol = str(reply.get("result", {}).get("protocolVersion", ""))
        return reply

    async def _reply(self, response: httpx.Response, request_id: Any) -> dict[str, Any]:
        if response.headers.get("content-type", "").startswith("application/json"):
            message = _message(self.url, await response.aread())
            if message.get("id") != request_id:
                raise McpError(
                    self.url, f"a response to request {message.get('id')!r}, not {request_id!r}"
                )
            return message
        async for event in read_events(response.aiter_lines()):
            if not event.data.strip():
                continue
            message = _message(self.url, event.data)
            if message.get("id") == request_id and "method" not in message:
                return message
            if "method" in message and "id" in message:  # the server's own request, such as a ping
                await self._answer(message)
        raise McpError(self.url, "the stream ended without a response")

    async def _answer(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if request["method"] == "ping":
            reply["result"] = {}
        else:
            reply["error"] = {
                "code": -32601,
                "message": f"router does not offer {request['method']}",
            }
        await self.client.post(self.url, content=_encoder.encode(reply), headers=self._headers())


def _message(url: str, body: bytes | str) -> dict[str, Any]:
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise McpError(url, f"not JSON-RPC: {exc}") from exc
    if not isinstance(message, dict):
        raise McpError(url, "not a JSON-RPC message")
    return message
