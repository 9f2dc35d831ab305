"""Ceilings that are never passed: before each model call the engine bounds the call's input
tokens, caps its output (``max_tokens``) to what the run's token and cost ceilings leave,
and ends the run ``limit_exceeded`` before spending when not even one output token fits. A
cost ceiling over an unpriced model, or a model that cannot cap its answer, is refused at
start. Children spend within their parent's remainder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router import (
    ConfigError,
    Engine,
    Limits,
    MemoryStore,
    Message,
    ModelTurn,
    Phase,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    Tools,
    Usage,
    tool,
)
from router.agents import agent_tool
from router.core.events import LimitExceeded, ModelResponded
from router.core.limits import cap_call
from router.core.stored import decode_run
from router.core.tokens import (
    MESSAGE_FRAMING,
    REPLY_PRIMING,
    ByteBound,
    message_tokens,
    tools_tokens,
)
from router.models.routing import Candidate, ModelRouter

pytestmark = pytest.mark.anyio
USER = Principal(id="u")
BOUND = ByteBound()


class Honest:
    """A model that reports what a provider would: input tokens no more than the request's
    bytes, and output as long as it wants (``wants`` per turn) but never past ``max_tokens``.
    Its turns: a call of ``tool`` while ``calls`` remain, then an answer."""

    def __init__(
        self, wants: Sequence[int], *, calls: int = 0, tool: str = "work", name: str = "m"
    ) -> None:
        self.name, self.wants, self.calls_left, self.tool = name, list(wants), calls, tool
        self.asked: list[int | None] = []

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        turn = len(self.asked)
        self.asked.append(max_tokens)
        want = self.wants[turn % len(self.wants)]
        out = want if max_tokens is None else min(want, max_tokens)
        usage = Usage(input_tokens=sum(BOUND.count(m.content) for m in messages), output_tokens=out)
        if self.calls_left:
            self.calls_left -= 1
            args = f'{{"task": "t{turn}"}}'
            return ModelTurn(tool_calls=(ProposedCall(f"c{turn}", self.tool, args),), usage=usage)
        return ModelTurn(text="done", usage=usage)


@tool(inline=True, idempotent=True)
def work(task: str) -> str:
    """Do a piece of work."""
    return f"did {task}"


# --- counting ---------------------------------------------------------------------------


def test_the_byte_bound_counts_utf8_bytes_and_a_message_its_framing() -> None:
    assert BOUND.count("hello") == 5 and BOUND.count("héllo") == 6 and BOUND.count("") == 0
    assert BOUND.exact is False
    plain = Message(role="user", content="hello")
    assert message_tokens(BOUND, plain) == MESSAGE_FRAMING + 5
    result = Message(role="tool", content="42", call_id="c1", name="add")
    assert message_tokens(BOUND, result) == MESSAGE_FRAMING + 2 + 2 + 1 + 3
    assert tools_tokens(BOUND, []) == REPLY_PRIMING
    assert tools_tokens(BOUND, Tools([work]).schemas) > REPLY_PRIMING + 50


# --- the check before a call ----------------------------------------------------------------


class Spent(msgspec.Struct):
    limits: Limits
    steps: int = 0
    usage: Usage = Usage()
    cost_nusd: int = 0
    started_at: int = 0
    last_at: int = 0
    budgeted: bool = True


def test_the_cap_leaves_the_worst_case_within_every_ceiling() -> None:
    tokens = Spent(Limits(max_total_tokens=300), usage=Usage(input_tokens=100, output_tokens=50))
    assert cap_call(tokens, 100, (0, 0), None) == 50  # 300 - 150 spent - 100 in
    assert cap_call(tokens, 100, (0, 0), 20) == 20  # the model's reserve is lower
    # 1,000 nano-USD per input token and 2,000 per output token; 1 cent left
    cost = Spent(Limits(max_cost_usd=0.01))
    assert cap_call(cost, 4_000, (1_000, 2_000), None) == 3_000
    assert cap_call(Spent(Limits(), budgeted=False), 10**9, (1, 1), 7) == 7


def test_a_call_that_cannot_fit_one_output_token_is_refused_before_it_is_made() -> None:
    full = Spent(Limits(max_total_tokens=300), usage=Usage(input_tokens=200))
    refused = cap_call(full, 100, (0, 0), None)
    assert isinstance(refused, LimitExceeded)
    assert (refused.limit, refused.value, refused.ceiling) == ("max_total_tokens", 301, 300)
    broke = cap_call(Spent(Limits(max_cost_usd=0.001)), 1_000, (1_000, 1_000), None)
    assert isinstance(broke, LimitExceeded) and broke.limit == "max_cost_usd"
    assert broke.value == pytest.approx(0.001001)
    wide = cap_call(Spent(Limits(max_input_tokens=50)), 51, (0, 0), None)
    assert isinstance(wide, LimitExceeded) and wide.limit == "max_input_tokens"


# --- the engine ------------------------------------------------------------------------------


async def test_a_token_ceiling_is_never_passed_and_the_last_call_is_never_made() -> None:
    store = MemoryStore()
    model = Honest([400], calls=5)  # 6 answers of 400 tokens would pass 2,000
    engine = Engine(store, model, Tools([work]))
    result = await engine.start("go", principal=USER, limits=Limits(max_total_tokens=2_000))
    assert result.phase is Phase.LIMIT_EXCEEDED
    assert result.usage.total_tokens <= 2_000
    events = decode_run(await store.read(result.run_id))
    last = events[-1]
    assert isinstance(last, LimitExceeded) and last.limit == "max_total_tokens"
    assert "before the model call" in last.detail
    responded = [e for e in events if isinstance(e, ModelResponded)]
    assert len(model.asked) == len(responded)  # the refused call was never made
    assert all(cap is not None for cap in model.asked)


async def test_a_cost_ceiling_caps_each_answer_to_what_is_left() -> None:
    prices = PriceTable({"m": Price(input_per_mtok=1_000.0, output_per_mtok=10_000.0)})
    model = Honest([500], calls=3)
    engine = Engine(MemoryStore(), model, Tools([work]), prices=prices)
    result = await engine.start("go", principal=USER, limits=Limits(max_cost_usd=1.0))
    assert result.cost_usd <= 1.0
    assert model.asked[0] is not None and model.asked[0] < 500  # 1 cent per output token


async def test_an_unpriced_model_under_a_cost_ceiling_is_refused_before_anything_is_recorded() -> (
    None
):
    store = MemoryStore()
    engine = Engine(store, Honest([1]), Tools([]), prices=PriceTable({"other": Price(1, 1)}))
    with pytest.raises(ConfigError, match="needs a price for every model.*'m'"):
        await engine.start("go", principal=USER, limits=Limits(max_cost_usd=1.0))
    assert await store.runs() == []
    with pytest.raises(ConfigError, match="'m'"):
        Engine(store, Honest([1]), Tools([]), limits=Limits(max_cost_usd=1.0))
    assert (await engine.start("go", principal=USER)).phase is Phase.DONE  # no ceiling


async def test_a_model_that_cannot_cap_its_answer_is_refused_under_a_ceiling() -> None:
    class Uncapped:
        name = "m"

        async def respond(self, messages: Any, tools: Any) -> ModelTurn:
            return ModelTurn(text="done")

    engine = Engine(MemoryStore(), Uncapped(), Tools([]))
    with pytest.raises(ConfigError, match="takes no max_tokens"):
        await engine.start("go", principal=USER, limits=Limits(max_total_tokens=100))
    assert (await engine.start("go", principal=USER)).phase is Phase.DONE
    reserved = PriceTable({"m": Price(1, 1, context_window=1000, output_reserve=100)})
    with pytest.raises(ConfigError, match="output reserve"):
        Engine(MemoryStore(), Uncapped(), Tools([]), prices=reserved)


async def test_the_price_tables_output_reserve_caps_every_answer() -> None:
    model = Honest([5_000])
    prices = PriceTable({"m": Price(1, 1, context_window=8_000, output_reserve=1_000)})
    result = await Engine(MemoryStore(), model, Tools([]), prices=prices).start(
        "go", principal=USER
    )
    assert model.asked == [1_000] and result.usage.output_tokens == 1_000


async def test_a_routed_call_is_priced_at_its_dearest_candidate_and_skips_an_uncapped_one() -> None:
    class Uncapped:
        name = "old"

        async def respond(self, messages: Any, tools: Any) -> ModelTurn:
            raise AssertionError("asked without a cap")

    routed = ModelRouter([Candidate(Uncapped()), Candidate(Honest([400], name="new"))])
    assert routed.models == ("old", "new")
    cheap_and_dear = PriceTable({"old": Price(1, 1), "new": Price(1_000, 10_000)})
    with pytest.raises(ConfigError, match="'old'"):
        Engine(
            MemoryStore(),
            routed,
            Tools([]),
            prices=PriceTable({"new": Price(1, 1)}),
            limits=Limits(max_cost_usd=1.0),
        )
    engine = Engine(MemoryStore(), routed, Tools([]), prices=cheap_and_dear)
    result = await engine.start("go", principal=USER, limits=Limits(max_cost_usd=1.0))
    assert result.phase is Phase.DONE and result.cost_usd <= 1.0
    store = engine.store
    events = decode_run(await store.read(result.run_id))
    route = next(e for e in events if type(e).__name__ == "ModelRouted")
    assert [(a.model, a.outcome, a.detail) for a in route.attempts][0] == (
        "old",
        "skipped",
        "lacks max_tokens",
    )


# --- 1,000 random runs, children included ------------------------------------------------

RATES = st.sampled_from([0.15, 0.6, 3.0, 15.0, 75.0])


@settings(max_examples=1_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.one_of(st.none(), st.integers(1, 4_000)),
    dollars=st.one_of(st.none(), st.integers(1, 20_000)),  # in millionths of a dollar
    rates=st.tuples(RATES, RATES),
    wants=st.lists(st.integers(0, 1_500), min_size=1, max_size=6),
    calls=st.integers(0, 6),
    child_wants=st.lists(st.integers(0, 1_500), min_size=1, max_size=4),
    child_calls=st.integers(0, 3),
)
def test_random_runs_never_spend_past_a_ceiling_children_included(
    total: int | None,
    dollars: int | None,
    rates: tuple[float, float],
    wants: list[int],
    calls: int,
    child_wants: list[int],
    child_calls: int,
) -> None:
    import anyio

    limits = Limits(
        max_steps=1_000,
        max_total_tokens=total,
        max_cost_usd=None if dollars is None else dollars / 1e6,
    )
    prices = PriceTable({"m": Price(*rates), "child": Price(*rates)})

    async def one() -> None:
        store = MemoryStore()
        child = Engine(
            store,
            Honest(child_wants, calls=child_calls, name="child"),
            Tools([work]),
            prices=prices,
            agent="child",
        )
        ask = agent_tool(child, name="ask", description="Ask a child agent.")
        parent = Engine(store, Honest(wants, calls=calls, tool="ask"), Tools([ask]), prices=prices)
        result = await parent.start("go", principal=USER, limits=limits)
        assert result.phase in (Phase.DONE, Phase.LIMIT_EXCEEDED), result
        if total is not None:
            assert result.usage.total_tokens <= total, result
        if dollars is not None:
            assert round(result.cost_usd * 1e9) <= dollars * 1_000, result
        runs = await store.runs()
        event(f"{result.phase}, {'with' if len(runs) > 1 else 'no'} children")

    anyio.run(one)
