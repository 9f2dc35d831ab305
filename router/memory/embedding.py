"""A deterministic local embedder: feature hashing of words and character trigrams. Pure.

Real lexical similarity (texts that share words and word pieces are near), no model to
download, the same vectors on every machine and in every process (the hash is BLAKE2b, not
Python's salted ``hash``). For tests, the demo and namespaces of short notes; a service that
needs meaning rather than words plugs in a model through the ``Embedder`` protocol
(``router.models.embeddings.OpenAIEmbedder``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import final

from ..errors import ConfigError

__all__ = ["HashedEmbedder"]

_WORD = re.compile(r"\w+", re.UNICODE)


@final
class HashedEmbedder:
    """Words weigh 1, their trigrams (with word boundaries) 0.5, each hashed to a dimension
    and a sign."""

    def __init__(self, dimensions: int = 256) -> None:
        if dimensions < 8:
            raise ConfigError(f"an embedder needs at least 8 dimensions, not {dimensions}")
        self.dimensions = dimensions
        self.name = f"hashed-{dimensions}"

    def vector(self, text: str) -> list[float]:
        values = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            self._add(values, word, 1.0)
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                self._add(values, padded[i : i + 3], 0.5)
        if not any(values):
            values[0] = 1.0  # a text with no words: one fixed direction
        return values

    def _add(self, values: list[float], feature: str, weight: float) -> None:
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        values[digest % self.dimensions] += weight if digest >> 63 else -weight

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(t) for t in texts]
