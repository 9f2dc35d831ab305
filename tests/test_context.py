"""The context policy, for any transcript: never more than the budget, never a call without
its result or a result without its call, never a pinned message dropped; and the window a
live run keeps step by step is the request computed from scratch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import (
    ByteBound,
    ConfigError,
    Engine,
    Limits,
    Message,
    ModelTurn,
    Phase,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    SqliteStore,
    Tools,
    Usage,
    tool,
)
from router.core.events import ContextSummarized, ModelResponded, ToolCall
from router.core.stored import decode_run
from router.core.tokens import message_tokens, tools_tokens
from router.memory import ContextPolicy, Window, fit
from router.models.tokens import OpenAITokenizer

BOUND = ByteBound()
USER = Principal(id="u")
PINNED = [Message(role="system", content="You are careful."), Message(role="user", content="Go.")]


@st.composite
def groups(draw: st.DrawFn, turn: int) -> list[Message]:
    """One group: a model turn proposing calls with their results, a final text, or a note."""
    kind = draw(st.sampled_from(["calls", "calls", "calls", "text", "note"]))
    if kind == "note":
        return [Message(role="user", content=draw(st.text(max_size=80)))]
    if kind == "text":
        return [Message(role="assistant", content=draw(st.text(max_size=200)))]
    n = draw(st.integers(1, 3))
    calls = tuple(ToolCall(id=f"c{turn}_{i}", name="look", arguments='{"q": 1}') for i in range(n))
    results = [
        Message(
            role="tool",
            call_id=c.id,
            name="look",
            content=draw(st.text(alphabet="abc xyz\n", max_size=1_500)),
        )
        for c in calls
    ]
    return [Message(role="assistant", tool_calls=calls), *results]


@st.composite
def transcripts(draw: st.DrawFn) -> list[list[Message]]:
    return [draw(groups(turn)) for turn in range(draw(st.integers(0, 40)))]


POLICIES = st.builds(
    ContextPolicy,
    keep_recent=st.integers(1, 4),
    shorten_at=st.sampled_from([0.3, 0.5, 1.0]),
    shorten_results_to=st.integers(10, 300),
)


def check(request_messages: list[Message], tokens: int, budget: int) -> None:
    assert tokens <= budget
    assert sum(message_tokens(BOUND, m) for m in request_messages) == tokens
    assert request_messages[: len(PINNED)] == PINNED
    open_calls: set[str] = set()
    for m in request_messages[len(PINNED) :]:
        if m.role == "tool":
            assert m.call_id in open_calls, "a result without its call"
            open_calls.discard(m.call_id)
        else:
            assert not open_calls, "a call without its result"
            open_calls = {c.id for c in m.tool_calls}


@settings(max_examples=400, deadline=None)
@given(transcripts(), POLICIES, st.integers(60, 6_000), st.data())
def test_any_transcript_fits_or_is_refused_and_the_live_window_agrees(
    turns: list[list[Message]], policy: ContextPolicy, budget: int, data: st.DataObject
) -> None:
    window = Window(policy, budget, BOUND, len(PINNED))
    messages = list(PINNED)
    summary: tuple[str, int] | None = None
    for step, group in enumerate([[], *turns]):
        messages += group
        window.follow(messages)
        wanted = window.wants_summary()
        if wanted is not None and data.draw(st.booleans()):  # a summariser answers
            summary = (data.draw(st.text(max_size=300)), wanted)
            window.summarized_by(*summary)
        live = window.request(messages)
        scratch = fit(
            messages,
            policy=policy,
            budget=budget,
            tokenizer=BOUND,
            pinned=len(PINNED),
            summary=summary,
        )
        assert live == scratch
        if live is None:  # the newest groups alone pass the budget: a budget for them fits
            newest = [m for g in turns[:step][-policy.keep_recent :] for m in g]
            room = sum(message_tokens(BOUND, m) for m in [*PINNED, *newest]) + 500
            assert room > budget
            roomy = fit(messages, policy=policy, budget=room, tokenizer=BOUND, pinned=2)
            assert roomy is not None
            continue
        check(live.messages, live.tokens, budget)
        sent = {id(m) for m in live.messages}
        assert all(id(m) in sent for m in messages[-len(group) :] if group)  # newest group whole


def test_a_conversation_under_the_budget_is_sent_as_it_is() -> None:
    messages = [*PINNED, Message(role="assistant", content="Done.")]
    request = fit(messages, policy=ContextPolicy(), budget=1_000, tokenizer=BOUND, pinned=2)
    assert request is not None and request.messages == messages
    assert (request.shortened, request.left_out, request.summarized) == (0, 0, 0)


def test_under_pressure_old_results_are_cut_then_old_turns_left_out_with_a_note() -> None:
    turns = []
    for i in range(10):
        call = ToolCall(id=f"c{i}", name="look", arguments="{}")
        turns += [
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", call_id=f"c{i}", name="look", content="x" * 1_000),
        ]
    messages = [*PINNED, *turns]
    policy = ContextPolicy(keep_recent=2, shorten_results_to=100)
    request = fit(messages, policy=policy, budget=3_000, tokenizer=BOUND, pinned=2)
    assert request is not None and request.tokens <= 3_000
    assert request.shortened > 0 and request.left_out > 0
    note = request.messages[2]
    assert note.role == "user" and "earlier messages were left out" in note.content
    assert request.messages[-1].content == "x" * 1_000  # the newest results whole
    assert "more characters of this result were cut" in request.messages[-5].content


def test_a_window_too_small_for_the_newest_turns_is_refused() -> None:
    big = Message(role="assistant", content="y" * 5_000)
    assert (
        fit([*PINNED, big], policy=ContextPolicy(), budget=500, tokenizer=BOUND, pinned=2) is None
    )


def test_exact_counts_fit_more_than_the_byte_bound() -> None:
    turns = [Message(role="assistant", content="word " * 200) for _ in range(20)]
    messages = [*PINNED, *turns]
    policy = ContextPolicy(keep_recent=1)
    exact = fit(
        messages,
        policy=policy,
        budget=2_000,
        tokenizer=OpenAITokenizer("o200k_base"),
        pinned=2,
    )
    bound = fit(messages, policy=policy, budget=2_000, tokenizer=BOUND, pinned=2)
    assert exact is not None and bound is not None
    assert len(exact.messages) > len(bound.messages)


def test_a_policy_that_cannot_work_is_refused() -> None:
    with pytest.raises(ConfigError):
        ContextPolicy(summarize_at=0.5, summarize_to=0.6)
    with pytest.raises(ConfigError):
        ContextPolicy(keep_recent=0)
    with pytest.raises(ConfigError):
        ContextPolicy(budget_tokens=0)


# --- a long run in the engine --------------------------------------------------------------

STEPS = 200
EXACT = OpenAITokenizer("o200k_base")


class Looker:
    """A model that looks up one record per turn for STEPS turns, then answers; it counts
    what it is sent with the exact tokenizer, as the provider would."""

    name = "gpt-4o-mini"

    def __init__(self, crash_at: int | None = None) -> None:
        self.sent: list[int] = []
        self.crash_at = crash_at

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        count = sum(message_tokens(EXACT, m) for m in messages) + tools_tokens(EXACT, tools)
        self.sent.append(count)
        usage = Usage(input_tokens=count, output_tokens=20)
        if self.crash_at is not None and len(self.sent) == self.crash_at:
            raise Crash
        if len(self.sent) > STEPS:
            return ModelTurn(text="all looked up", usage=usage)
        call = ProposedCall(f"c{len(self.sent)}", "lookup", f'{{"n": {len(self.sent)}}}')
        return ModelTurn(tool_calls=(call,), usage=usage)


class Crash(BaseException):
    """Stands for the process dying mid-run."""


class Condenser:
    name = "gpt-4o-mini"

    def __init__(self) -> None:
        self.calls = 0

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        self.calls += 1
        looked = messages[-1].content.count("[result of lookup")
        text = f"Looked up {looked} more records; all were in order."
        return ModelTurn(text=text, usage=Usage(input_tokens=500, output_tokens=15))


@tool(inline=True, idempotent=True)
def lookup(n: int) -> str:
    """Look up record n."""
    return f"record {n}: " + ", ".join(f"field{i}=value{i * n}" for i in range(25))


WINDOWED = PriceTable({"gpt-4o-mini": Price(0.15, 0.6, context_window=4_000, output_reserve=500)})


def windowed(store: Any, model: Any, condenser: Any) -> Engine:
    return Engine(
        store,
        model,
        Tools([lookup]),
        prices=WINDOWED,
        tokenizer=EXACT,
        context=ContextPolicy(),
        summarizer=condenser,
        limits=Limits(max_steps=STEPS + 5, max_tool_calls=STEPS + 5),
    )


@pytest.mark.anyio
async def test_a_200_step_run_stays_inside_a_4000_token_window_and_replays_alone(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        model, condenser = Looker(), Condenser()
        result = await windowed(store, model, condenser).start("Look them all up.", principal=USER)
        assert result.phase is Phase.DONE and result.steps == STEPS + 1
        assert max(model.sent) <= 4_000 - 500  # the provider's own count, every call
        events = decode_run(await store.read(result.run_id))
        sent = [e.sent for e in events if isinstance(e, ModelResponded)]
        assert all(s is not None and s.tokens <= 3_500 for s in sent)
        assert all(s is not None and s.tokens >= c for s, c in zip(sent, model.sent, strict=True))
        # flat once the window filled: a saw-tooth between the summary's target and trigger
        late = model.sent[50:]
        assert max(late) <= 0.8 * 3_500 and min(late) >= 0.25 * 3_500
        means = [sum(late[i : i + 50]) / 50 for i in range(0, 150, 50)]
        assert max(means) - min(means) < 0.1 * 3_500
        summaries = [e for e in events if isinstance(e, ContextSummarized)]
        assert len(summaries) == condenser.calls >= 3
        assert result.usage.input_tokens == sum(model.sent) + 500 * condenser.calls
        # replay needs neither the model nor the summariser
        report = await windowed(store, Refuses(), Refuses()).replay(result.run_id)
        assert report.identical, report.divergence


class Refuses:
    name = "gpt-4o-mini"

    async def respond(self, *args: Any, **kwargs: Any) -> ModelTurn:
        raise AssertionError("called during replay or resume")


@pytest.mark.anyio
async def test_a_run_resumed_after_a_crash_sends_what_it_would_have_sent(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        whole = Looker()
        done = await windowed(store, whole, Condenser()).start("Look them all up.", principal=USER)
        crashing, condenser = Looker(crash_at=120), Condenser()
        with pytest.raises(Crash):
            await windowed(store, crashing, condenser).start(
                "Look them all up.", principal=USER, run_id="crashed"
            )
        again = Looker()
        again.sent = crashing.sent[:-1]  # the crashed call was never answered
        resumed = await windowed(store, again, condenser).resume("crashed")
        assert resumed.phase is Phase.DONE and again.sent == whole.sent
        made = decode_run(await store.read(done.run_id))
        # each summary was asked for once, across the crash: none was asked for again
        assert condenser.calls == sum(1 for e in made if isinstance(e, ContextSummarized))
