"""The Anthropic Messages protocol (``/v1/messages``), with tool use and streaming.

Needs the ``providers`` extra (httpx). System messages become the request's ``system``;
tool calls are ``tool_use`` blocks and their results ``tool_result`` blocks in the next
user message, as the protocol requires (consecutive user content is merged into one
message). With ``stream=True`` text and ``input_json_delta`` pieces go to ``on_delta``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, final

import httpx
import msgspec

from ..core.events import Message, Usage
from ..core.protocols import ModelTurn, ProposedCall, StreamDelta
from ..core.streams import ServerSentEvent
from ..core.tools import Retry
from ..errors import ModelResponseInvalid, ModelUnavailable
from .http import DEFAULT_RETRY, Transport, decode_response, incomplete, retryable

__all__ = ["AnthropicModel"]

VERSION = "2023-06-01"
_encoder = msgspec.json.Encoder(order="deterministic")


class _Block(msgspec.Struct):
    type: str = ""
    text: str = ""
    id: str = ""
    name: str = ""
    input: Any = None
    partial_json: str = ""


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0


class _Response(msgspec.Struct):
    content: list[_Block] = []
    usage: _Usage = msgspec.field(default_factory=_Usage)
    model: str = ""
    stop_reason: str | None = None


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""


class _StreamEvent(msgspec.Struct):
    type: str
    index: int = 0
    message: _Response | None = None
    content_block: _Block | None = None
    delta: _Block | None = None
    usage: _Usage | None = None
    error: _Error | None = None


@final
class AnthropicModel:
    """A model behind Anthropic's Messages API.

    api_key: defaults to the ANTHROPIC_API_KEY environment variable.
    max_tokens: the protocol requires one; a run's cap (``respond(max_tokens=)``) lowers it.
    options: further request fields (temperature, top_p, metadata ...), sent as given.
    timeout_s: for a whole response, or for the longest silence in a stream; max_stream_s
        bounds a whole stream (none by default: a long answer that keeps coming is fine).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "https://api.anthropic.com/v1",
        api_key: str | None = None,
        max_tokens: int = 4096,
        stream: bool = False,
        on_delta: Callable[[StreamDelta], None] | None = None,
        options: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        max_stream_s: float | None = None,
        retry: Retry = DEFAULT_RETRY,
        max_retry_after_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = model
        self.max_tokens = max_tokens
        self.stream = stream
        self.options = options or {}
        key = os.environ.get("ANTHROPIC_API_KEY", "") if api_key is None else api_key
        auth = {"x-api-key": key} if key else {}
        self.transport = Transport(
            base_url,
            headers={"anthropic-version": VERSION, **auth, **(headers or {})},
            timeout_s=timeout_s,
            max_stream_s=max_stream_s,
            retry=retry,
            max_retry_after_s=max_retry_after_s,
            client=client,
            on_delta=on_delta,
        )

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        system, conversation = _conversation(messages)
        body: dict[str, Any] = {
            "model": self.name,
            "max_tokens": self.max_tokens,
            "messages": conversation,
            **self.options,
        }
        if max_tokens is not None:  # the run's cap: what its ceilings leave for this answer
            body["max_tokens"] = min(body["max_tokens"], max_tokens)
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [_tool(t) for t in tools]
        if not self.stream:
            return self._decode(await self.transport.post_json("messages", body, self.name))
        body["stream"] = True
        return await self.transport.post_stream(
            "messages", body, self.name, self._read_stream, self._decode
        )

    async def aclose(self) -> None:
        await self.transport.aclose()

    def _decode(self, raw: bytes) -> ModelTurn:
        """A whole (not streamed) response as a turn."""
        return self._turn(decode_response(self.name, raw, _Response))

    def _turn(self, response: _Response) -> ModelTurn:
        text = "".join(b.text for b in response.content if b.type == "text")
        calls = tuple(
            ProposedCall(b.id, b.name, _encoder.encode(b.input if b.input is not None else {}))
            for b in response.content
            if b.type == "tool_use"
        )
        return ModelTurn(
            text=text,
            tool_calls=calls,
            model=self.name,
            served_model=response.model,
            usage=Usage(
                input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
            ),
        )

    async def _read_stream(self, events: AsyncIterator[ServerSentEvent], attempt: int) -> ModelTurn:
        blocks: dict[int, list[str]] = {}  # index -> [type, id, name, pieces...]
        usage, model, done = _Usage(), "", False
        async for sse in events:
            event = decode_response(self.name, sse.data, _StreamEvent)
            if event.type == "message_start" and event.message is not None:
                model = event.message.model or model
                usage = event.message.usage
            elif event.type == "content_block_start" and event.content_block is not None:
                block = event.content_block
                blocks[event.index] = [block.type, block.id, block.name, block.text]
                if block.type == "tool_use":
                    self.transport.emit(
                        StreamDelta(
                            model=self.name,
                            call_index=event.index,
                            call_id=block.id,
                            call_name=block.name,
                            attempt=attempt,
                        )
                    )
            elif event.type == "content_block_delta" and event.delta is not None:
                self._delta(blocks, event.index, event.delta, model, attempt)
            elif event.type == "message_delta" and event.usage is not None:
                usage = _Usage(
                    usage.input_tokens or event.usage.input_tokens, event.usage.output_tokens
                )
            elif event.type == "message_stop":
                done = True
                break
            elif event.type == "error":
                error = event.error or _Error()
                raise retryable(
                    ModelUnavailable(self.name, f"{error.type}: {error.message}", attempts=attempt)
                )
        if not done:
            raise incomplete(self.name, attempt)
        text = "".join("".join(b[3:]) for _, b in sorted(blocks.items()) if b[0] == "text")
        calls = tuple(
            ProposedCall(b[1], b[2], "".join(b[3:]) or "{}")
            for _, b in sorted(blocks.items())
            if b[0] == "tool_use"
        )
        return ModelTurn(
            text=text,
            tool_calls=calls,
            model=self.name,
            served_model=model,
            usage=Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        )

    def _delta(
        self, blocks: dict[int, list[str]], index: int, delta: _Block, model: str, attempt: int
    ) -> None:
        block = blocks.get(index)
        if block is None:
            raise ModelResponseInvalid(
                self.name, f"a delta for content block {index}, which never started"
            )
        if delta.type == "text_delta":
            block.append(delta.text)
            self.transport.emit(StreamDelta(model=self.name, text=delta.text, attempt=attempt))
        elif delta.type == "input_json_delta":
            block.append(delta.partial_json)
            self.transport.emit(
                StreamDelta(
                    model=self.name,
                    call_index=index,
                    call_id=block[1],
                    arguments=delta.partial_json,
                    attempt=attempt,
                )
            )


def _tool(schema: dict[str, Any]) -> dict[str, Any]:
    function = schema["function"]
    return {
        "name": function["name"],
        "description": function.get("description", ""),
        "input_schema": function["parameters"],
    }


def _conversation(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system text, and the messages in Anthropic's alternating form."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue  # an empty turn (a reviewer sent back an empty answer): the API refuses it
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": m.call_id,
                "content": m.content,
                **({"is_error": True} if m.content.startswith("error[") else {}),
            }
        ]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for call in m.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _arguments(call.arguments),
            }
        )
    return blocks


def _arguments(text: str) -> Any:
    """A recorded call's arguments as the object the protocol requires; arguments the model
    sent malformed were refused, and the tool_result that follows says why."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
