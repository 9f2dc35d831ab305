"""context: what the context policy costs and saves on a 200-step run whose tool results are
about 600 bytes each (about 250 o200k tokens), in a 4,000-token window (500 kept for the
answer).

Cost: the policy's time per step as a live run pays it (the window follows the new
messages, then builds the request), with the byte bound and with the exact o200k
tokenizer (the tokens extra). Savings: input tokens per model call over the last 100
steps, against resending the whole conversation every call (what an agent loop does by
default: LangGraph's MessagesState keeps and sends every message).
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

from router import ByteBound, ContextPolicy, Message
from router.core.events import ToolCall
from router.core.tokens import message_tokens
from router.memory import Window

from .measure import Record, record, settle
from .peers import Samples
from .system import VERSION

STEPS = 200
BUDGET = 3_500


def _turns() -> list[list[Message]]:
    out = []
    for i in range(STEPS):
        call = ToolCall(id=f"call_{i}_0", name="lookup", arguments=f'{{"record": {i}}}')
        result = f"record {i}: " + ", ".join(f"field{k}=value{k * i}" for k in range(32))
        out.append(
            [
                Message(role="assistant", tool_calls=(call,)),
                Message(role="tool", call_id=call.id, name="lookup", content=result),
            ]
        )
    return out


def _tokenizers() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [("utf8-bytes", ByteBound())]
    try:
        from router.models.tokens import OpenAITokenizer

        found.append(("o200k_base", OpenAITokenizer("o200k_base")))
    except Exception:  # the tokens extra is not installed: the bound alone
        pass
    return found


def _one_run(
    tokenizer: object, turns: list[list[Message]]
) -> tuple[list[float], list[float], list[int]]:
    """Per step: the policy's microseconds (counting the new messages, then fitting), the
    fitting's alone, and the request's tokens."""
    pinned = [
        Message(role="system", content="Look up every record."),
        Message(role="user", content="Go."),
    ]
    window = Window(ContextPolicy(), BUDGET, tokenizer, len(pinned))  # type: ignore[arg-type]
    messages = list(pinned)
    times, fits, tokens = [], [], []
    for turn in turns:
        messages += turn
        begin = time.perf_counter_ns()
        window.follow(messages)
        counted = time.perf_counter_ns()
        request = window.request(messages)
        end = time.perf_counter_ns()
        times.append((end - begin) / 1000)
        fits.append((end - counted) / 1000)
        assert request is not None and request.tokens <= BUDGET
        tokens.append(request.tokens)
    return times, fits, tokens


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    turns = _turns()
    repeats = 3 if quick else 20
    records = []
    for name, tokenizer in _tokenizers():
        settle()
        times: list[float] = []
        fits: list[float] = []
        for _ in range(repeats):
            step_times, fit_times, tokens = _one_run(tokenizer, turns)
            times += step_times
            fits += fit_times
        per_turn = [sum(message_tokens(tokenizer, m) for m in t) for t in turns]  # type: ignore[arg-type]
        everything = list(itertools.accumulate(per_turn))
        sent, resent = statistics.mean(tokens[100:]), statistics.mean(everything[100:])
        note = (
            f"the policy's time per step over {STEPS} steps in a {BUDGET:,}-token budget, "
            f"counting each new message once (fitting alone: p50 {statistics.median(fits):.1f} "
            f"us); "
            f"input tokens per call over the last 100 steps: {sent:,.0f}, against "
            f"{resent:,.0f} resending everything"
        )
        records.append(record("context", "router", VERSION, name, Samples(times), note, unit="us"))
    return records
