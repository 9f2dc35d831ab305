"""Token counts: the exact OpenAI encodings against counts made by an independent
implementation (tests/data/token_counts.json), and the byte bound that holds for any text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import ByteBound, ConfigError
from router.models.tokens import OpenAITokenizer

COUNTS = json.loads((Path(__file__).parent / "data" / "token_counts.json").read_text())["counts"]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_counts_match_an_independent_implementation(encoding: str) -> None:
    tokenizer = OpenAITokenizer(encoding)
    assert tokenizer.exact and tokenizer.name == encoding
    got = [tokenizer.count(c["text"]) for c in COUNTS]
    assert got == [c[encoding] for c in COUNTS]
    assert len(COUNTS) > 60 and sum(got) > 4_000


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_the_byte_bound_is_never_below_the_exact_count(text: str) -> None:
    for encoding in ("o200k_base", "cl100k_base"):
        assert OpenAITokenizer(encoding).count(text) <= ByteBound().count(text)


def test_a_model_names_its_encoding_and_an_unknown_one_is_refused() -> None:
    assert OpenAITokenizer.for_model("gpt-4o-mini").name == "o200k_base"
    assert OpenAITokenizer.for_model("gpt-4-turbo").name == "cl100k_base"
    assert OpenAITokenizer.for_model("o3-mini").name == "o200k_base"
    with pytest.raises(ConfigError, match="no known OpenAI encoding for model 'claude"):
        OpenAITokenizer.for_model("claude-sonnet-4-5")
    with pytest.raises(ConfigError, match="unknown encoding 'p50k'"):
        OpenAITokenizer("p50k")
