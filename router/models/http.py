"""What the provider adapters share: a pooled httpx client, retries on a deterministic
schedule that honour Retry-After, server-sent events, and errors mapped to router's tree.

Needs the ``providers`` extra (httpx). One ``Transport`` holds one connection pool, so the
many runs of a service that share a model adapter share its connections.

Retries: 429, 408, 409 and 5xx responses, timeouts and broken connections are retried up
to ``retry.attempts`` times. Attempt n waits ``retry.delay_before(n)`` (no jitter, so two
runs of a test wait alike), or longer if the provider's Retry-After (or retry-after-ms)
asks for more; a Retry-After beyond ``max_retry_after_s`` ends the retries at once.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, final

import anyio
import httpx
import msgspec

from ..core.protocols import ModelTurn, StreamDelta, current_run_id
from ..core.streams import ServerSentEvent, read_events
from ..core.tools import Retry
from ..errors import (
    ConfigError,
    ModelError,
    ModelRateLimited,
    ModelRequestRejected,
    ModelResponseInvalid,
    ModelUnavailable,
)

__all__ = ["DEFAULT_RETRY", "Transport", "decode_response", "incomplete", "retryable"]

DEFAULT_RETRY = Retry(attempts=4, base_delay_s=0.5, factor=2.0, max_delay_s=8.0)
_RETRIED = frozenset({408, 409, 429})
_encoder = msgspec.json.Encoder()
T = TypeVar("T")


class _Retryable(Exception):
    def __init__(self, error: ModelError) -> None:
        self.error = error


@final
class Transport:
    """POSTs JSON to one provider's base URL, with retries, through one connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        retry: Retry = DEFAULT_RETRY,
        max_retry_after_s: float = 60.0,
        max_connections: int = 100,
        client: httpx.AsyncClient | None = None,
        max_stream_s: float | None = None,
        on_delta: Callable[[StreamDelta], None] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL, not {base_url!r}")
        if timeout_s <= 0:
            raise ConfigError("timeout_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.headers = headers or {}
        self.params = params or {}
        self.timeout_s = timeout_s  # a whole response; for a stream, the longest silence
        self.max_stream_s = max_stream_s  # a whole stream (None: as long as it keeps coming)
        self.retry = retry
        self.max_retry_after_s = max_retry_after_s
        self.on_delta = on_delta
        self._owned = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def post_json(self, path: str, body: dict[str, Any], model: str) -> bytes:
        """The body of a successful response, after any retries."""

        async def attempt(n: int) -> bytes:
            response = await self.client.post(
                self._url(path),
                content=_encoder.encode(body),
                headers=self._headers(),
                params=self.params,
            )
            _check(response, model, n, await response.aread())
            return response.content

        return await self._with_retries(model, attempt, self.timeout_s)

    async def post_stream(
        self,
        path: str,
        body: dict[str, Any],
        model: str,
        read: Callable[[AsyncIterator[ServerSentEvent], int], Awaitable[ModelTurn]],
        whole: Callable[[bytes], ModelTurn],
    ) -> ModelTurn:
        """Stream a response as server-sent events into ``read(events, attempt)``, whose
        turn is returned; a failure mid-stream retries the whole request. A server that
        answers with one JSON body instead (some ignore ``stream``) goes to ``whole``, and
        its text to ``on_delta`` in one piece."""

        async def attempt(n: int) -> ModelTurn:
            async with self.client.stream(
                "POST",
                self._url(path),
                content=_encoder.encode(body),
                headers=self._headers(),
                params=self.params,
            ) as response:
                if response.status_code >= 300:
                    _check(response, model, n, await response.aread())
                if response.headers.get("content-type", "").startswith("application/json"):
                    turn = whole(await response.aread())
                    if turn.text:
                        self.emit(StreamDelta(model=model, text=turn.text, attempt=n))
                    return turn
                return await read(read_events(response.aiter_lines()), n)

        return await self._with_retries(model, attempt, self.max_stream_s)

    def emit(self, delta: StreamDelta) -> None:
        """Hand a piece of a streaming turn to ``on_delta``, tagged with the run it is for."""
        if self.on_delta is not None:
            self.on_delta(msgspec.structs.replace(delta, run_id=current_run_id.get()))

    async def aclose(self) -> None:
        if self._owned:
            await self.client.aclose()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.headers}

    async def _with_retries(
        self, model: str, attempt: Callable[[int], Awaitable[T]], limit: float | None
    ) -> T:
        for n in range(1, self.retry.attempts + 1):
            try:
                with anyio.fail_after(limit if limit is not None else float("inf")):
                    return await attempt(n)
            except _Retryable as exc:
                error = exc.error
            except TimeoutError:
                error = ModelUnavailable(
                    model, f"no complete response within {limit:g} s", attempts=n
                )
            except httpx.TimeoutException as exc:
                error = ModelUnavailable(model, f"timed out: {type(exc).__name__}", attempts=n)
            except httpx.TransportError as exc:
                error = ModelUnavailable(
                    model, f"connection failed: {type(exc).__name__}: {exc}", attempts=n
                )
            if n == self.retry.attempts:
                raise error
            wait = self.retry.delay_before(n + 1)
            if error.retry_after_s is not None:
                if error.retry_after_s > self.max_retry_after_s:
                    raise error
                wait = max(wait, error.retry_after_s)
            await anyio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


def _check(response: httpx.Response, model: str, attempt: int, body: bytes) -> None:
    status = response.status_code
    if status < 300:
        return
    reason = _provider_message(body) or response.reason_phrase or "no reason given"
    retry_after = _retry_after(response.headers)
    if status == 429:
        raise _Retryable(
            ModelRateLimited(
                model, reason, status=status, attempts=attempt, retry_after_s=retry_after
            )
        )
    if status in _RETRIED or status >= 500:
        raise _Retryable(
            ModelUnavailable(
                model, reason, status=status, attempts=attempt, retry_after_s=retry_after
            )
        )
    raise ModelRequestRejected(model, reason, status=status, attempts=attempt)


def _provider_message(body: bytes) -> str:
    """The message of an OpenAI or Anthropic error body, else the start of the body."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        kind = error.get("type") or error.get("code")
        return f"{kind}: {error['message']}" if isinstance(kind, str) else str(error["message"])
    return body[:200].decode("utf-8", "replace").strip()


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from retry-after-ms, or Retry-After in seconds or as an HTTP date."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable(error: ModelError) -> Exception:
    """What a stream reader raises for a failure the transport should retry."""
    return _Retryable(error)


def incomplete(model: str, attempt: int) -> Exception:
    """What a stream reader raises when the stream ends before its last event: retried."""
    return retryable(
        ModelUnavailable(model, "the stream ended before the turn was complete", attempts=attempt)
    )


def decode_response(model: str, body: bytes | str, shape: type[T]) -> T:
    """Decode a provider's response into its expected shape, or raise ModelResponseInvalid."""
    try:
        return msgspec.json.decode(body, type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ModelResponseInvalid(
            model, f"the response does not follow the protocol: {exc}"
        ) from exc
