"""Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (the ``providers`` extra):
OpenAI, Azure OpenAI, vLLM, Ollama and the like, through the same transport (retries,
timeouts, one connection pool) as the chat adapters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, final

import httpx
import msgspec

from ..core.tools import Retry
from ..errors import ConfigError, ModelResponseInvalid
from .http import DEFAULT_RETRY, Transport, decode_response

__all__ = ["OpenAIEmbedder"]


class _Datum(msgspec.Struct):
    index: int
    embedding: list[float]


class _Embeddings(msgspec.Struct):
    data: list[_Datum]


@final
class OpenAIEmbedder:
    """Texts to vectors with an embedding model. ``dimensions`` is asked of models that can
    shorten their vectors (text-embedding-3-*) and checked on every answer; ``batch`` texts
    go in one request."""

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        dimensions: int = 1536,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        send_dimensions: bool = True,
        batch: int = 256,
        timeout_s: float = 30.0,
        retry: Retry = DEFAULT_RETRY,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if dimensions < 1 or batch < 1:
            raise ConfigError(f"dimensions and batch must be positive: {dimensions}, {batch}")
        self.name, self.dimensions, self.batch = model, dimensions, batch
        self.send_dimensions = send_dimensions
        key = os.environ.get("OPENAI_API_KEY", "") if api_key is None else api_key
        self.transport = Transport(
            base_url,
            headers={"authorization": f"Bearer {key}"} if key else {},
            timeout_s=timeout_s,
            retry=retry,
            client=client,
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch):
            vectors += await self._embed(list(texts[start : start + self.batch]))
        return vectors

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.name, "input": texts, "encoding_format": "float"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        raw = await self.transport.post_json("embeddings", body, self.name)
        data = sorted(decode_response(self.name, raw, _Embeddings).data, key=lambda d: d.index)
        if [d.index for d in data] != list(range(len(texts))):
            raise ModelResponseInvalid(
                self.name,
                f"asked for {len(texts)} embeddings, got indexes {[d.index for d in data]}",
            )
        for d in data:
            if len(d.embedding) != self.dimensions:
                raise ModelResponseInvalid(
                    self.name,
                    f"an embedding of {len(d.embedding)} dimensions, not {self.dimensions}",
                )
        return [d.embedding for d in data]

    async def aclose(self) -> None:
        await self.transport.aclose()
