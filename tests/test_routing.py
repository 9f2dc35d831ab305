"""Multi-model routing: fallback, cheapest capable model, latency budget, circuit breakers,
every choice recorded as a model_routed event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest
from provider_server import ProviderServer, recorded

from router import (
    Engine,
    ManualClock,
    MemoryStore,
    Phase,
    Price,
    PriceTable,
    Principal,
    Tools,
    tool,
)
from router.core.events import Message, ModelResponded, ModelRouted
from router.core.protocols import ModelTurn
from router.core.tools import Retry
from router.errors import ConfigError, ModelUnavailable
from router.models.anthropic import AnthropicModel
from router.models.openai import OpenAIModel
from router.models.routing import Breaker, Candidate, ModelRouter
from router.models.scripted import ScriptedModel, call, say

pytestmark = pytest.mark.anyio
HELLO = [Message(role="user", content="hi")]


class Down:
    """A model whose provider is down: every call raises."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        self.calls += 1
        raise ConnectionError(f"{self.name} is down")


class Silent:
    """A model that never answers."""

    name = "silent"

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        await anyio.Event().wait()
        raise AssertionError("unreachable")


def answers(name: str, text: str = "ok") -> ScriptedModel:
    return ScriptedModel(lambda messages: say(text), name=name)


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    return a + b


async def routed_events(store: MemoryStore, run_id: str) -> list[Any]:
    from router import load_run

    events, _, _ = await load_run(store, run_id)
    return [e for e in events if isinstance(e, (ModelRouted, ModelResponded))]


async def test_ordered_fallback_records_each_attempt_and_why() -> None:
    store = MemoryStore()
    router = ModelRouter([Candidate(Down("primary")), Candidate(answers("backup", "fine"))])
    result = await Engine(store, router, Tools([add])).start("hi", principal=Principal(id="u"))
    assert (result.phase, result.output) == (Phase.DONE, "fine")
    routed, responded = await routed_events(store, result.run_id)
    assert routed.chosen == "backup" and responded.model == "backup"
    assert [(a.model, a.reason, a.outcome) for a in routed.attempts] == [
        ("primary", "fallback 1 of 2", "failed"),
        ("backup", "fallback 2 of 2", "answered"),
    ]
    assert routed.attempts[0].detail == "ConnectionError: primary is down"
    assert (await Engine(store, router, Tools([add])).replay(result.run_id)).identical


async def test_a_timeout_falls_back_to_the_next_model() -> None:
    router = ModelRouter([Candidate(Silent(), timeout_s=0.05), Candidate(answers("backup"))])
    turn = await router.respond(HELLO, [])
    assert [a.outcome for a in turn.route] == ["timed_out", "answered"]


async def test_cheapest_model_with_the_required_capabilities_is_chosen() -> None:
    router = ModelRouter(
        [
            Candidate(answers("large"), price=Price(5.0, 15.0)),
            Candidate(answers("tiny"), price=Price(0.1, 0.4), capabilities=()),
            Candidate(answers("small"), price=Price(0.15, 0.6)),
            Candidate(answers("vision"), price=Price(0.2, 0.8), capabilities=("tools", "vision")),
        ],
        strategy="cheapest",
    )
    with_tools = await router.respond(HELLO, Tools([add]).schemas)
    assert with_tools.model == "small"
    assert [(a.model, a.outcome, a.detail) for a in with_tools.route] == [
        ("tiny", "skipped", "lacks tools"),
        ("small", "answered", ""),
    ]
    assert (await router.respond(HELLO, [])).model == "tiny"
    picky = ModelRouter(router.candidates, strategy="cheapest", require={"vision"})
    assert (await picky.respond(HELLO, [])).model == "vision"


async def test_models_slower_than_the_latency_budget_are_skipped() -> None:
    router = ModelRouter(
        [
            Candidate(answers("slow"), expected_latency_s=4.0),
            Candidate(answers("fast"), expected_latency_s=0.3),
        ],
        latency_budget_s=1.0,
    )
    turn = await router.respond(HELLO, [])
    assert turn.model == "fast"
    assert turn.route[0].detail == "expected latency 4 s exceeds the 1 s budget"


async def test_a_circuit_opens_after_failures_in_a_row_and_half_opens_after_the_cooldown() -> None:
    clock = ManualClock(0)
    primary = Down("primary")
    router = ModelRouter(
        [Candidate(primary), Candidate(answers("backup"))],
        breaker=Breaker(failures_to_open=2, cooldown_s=10),
        clock=clock,
    )
    for _ in range(2):
        await router.respond(HELLO, [])
    assert primary.calls == 2
    skipped = await router.respond(HELLO, [])
    assert primary.calls == 2 and skipped.route[0].outcome == "skipped"
    assert skipped.route[0].detail.startswith("circuit open for 10.0 s")
    clock.advance(10)
    await router.respond(HELLO, [])  # one trial call after the cooldown, which fails and reopens it
    assert primary.calls == 3
    assert (await router.respond(HELLO, [])).route[0].outcome == "skipped"


async def test_the_same_state_gives_the_same_plan() -> None:
    def build() -> ModelRouter:
        return ModelRouter(
            [Candidate(answers(n), price=Price(p, p)) for n, p in [("a", 2), ("b", 1), ("c", 1)]],
            strategy="cheapest",
            clock=ManualClock(0),
        )

    assert [(c.name, why, skip) for c, why, skip in build().plan(frozenset())] == [
        (c.name, why, skip) for c, why, skip in build().plan(frozenset())
    ]
    assert [c.name for c, _, _ in build().plan(frozenset())] == ["b", "c", "a"]


async def test_when_no_model_answers_the_run_fails_with_the_attempts_in_its_log() -> None:
    store = MemoryStore()
    router = ModelRouter([Candidate(Down("a")), Candidate(Down("b"))])
    result = await Engine(store, router, Tools([add])).start("hi", principal=Principal(id="u"))
    assert result.phase is Phase.FAILED and "no candidate model answered" in result.reason
    (routed,) = await routed_events(store, result.run_id)
    assert routed.chosen == "" and [a.outcome for a in routed.attempts] == ["failed", "failed"]
    with pytest.raises(ModelUnavailable) as caught:
        await router.respond(HELLO, [])
    assert len(caught.value.route) == 2


async def test_the_chosen_models_price_is_charged() -> None:
    store = MemoryStore()
    router = ModelRouter(
        [
            Candidate(Down("dear")),
            Candidate(ScriptedModel([call("add", '{"a": 1, "b": 2}'), say("3")], name="cheap")),
        ]
    )
    prices = PriceTable({"dear": Price(100.0, 100.0), "cheap": Price(1.0, 1.0)})
    result = await Engine(store, router, Tools([add]), prices=prices).start(
        "1+2", principal=Principal(id="u")
    )
    assert result.phase is Phase.DONE and result.steps == 2


def test_routers_refuse_bad_configurations() -> None:
    with pytest.raises(ConfigError):
        ModelRouter([])
    with pytest.raises(ConfigError):
        ModelRouter([Candidate(answers("a")), Candidate(answers("a"))])
    with pytest.raises(ConfigError):
        Breaker(failures_to_open=0)


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


async def test_real_providers_fall_back_from_openai_to_anthropic(server: ProviderServer) -> None:
    fast = Retry(attempts=2, base_delay_s=0.001)
    openai = OpenAIModel("gpt-4o", base_url=server.url, api_key="k", retry=fast)
    claude = AnthropicModel("claude-sonnet-4-5", base_url=server.url, api_key="k", retry=fast)
    router = ModelRouter([Candidate(openai), Candidate(claude)])
    server.queue(
        recorded("openai_server_error.json", 500),
        recorded("openai_server_error.json", 500),
        recorded("anthropic_answer.json"),
    )
    try:
        turn = await router.respond(HELLO, [])
    finally:
        await router.aclose()
    assert turn.text == "Grace Hopper is due 1,050.00."
    assert [a.outcome for a in turn.route] == ["failed", "answered"]
    assert "ModelUnavailable" in turn.route[0].detail and "HTTP 500" in turn.route[0].detail


async def test_the_report_counts_each_candidates_outcomes() -> None:
    from router import load_run
    from router.core.report import Report

    store = MemoryStore()
    router = ModelRouter(
        [
            Candidate(Down("primary")),
            Candidate(ScriptedModel([call("add", '{"a": 1, "b": 2}'), say("3")], name="backup")),
        ]
    )
    result = await Engine(store, router, Tools([add])).start("1+2", principal=Principal(id="u"))
    events, _, _ = await load_run(store, result.run_id)
    header, rows = Report().add_all((result.run_id, e) for e in events).tables()["routing"]
    assert rows == [["backup", "2", "0", "0", "0"], ["primary", "0", "2", "0", "0"]]


class RaisesTimeout:
    name = "raises-timeout"

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        raise TimeoutError("upstream timed out")


async def test_a_models_own_timeout_error_is_a_failure_not_the_routers_timeout() -> None:
    turn = await ModelRouter([Candidate(RaisesTimeout()), Candidate(answers("backup"))]).respond(
        HELLO, []
    )
    assert [(a.outcome, a.detail) for a in turn.route] == [
        ("failed", "TimeoutError: upstream timed out"),
        ("answered", ""),
    ]


class Gate:
    """A model whose calls wait until the test lets them fail."""

    name = "gated"

    def __init__(self) -> None:
        self.calls = 0
        self.release = anyio.Event()

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        self.calls += 1
        await self.release.wait()
        raise ConnectionError("still down")


async def test_a_half_open_circuit_lets_exactly_one_trial_call_through() -> None:
    clock = ManualClock(0)
    gated = Gate()
    gated.release.set()
    router = ModelRouter(
        [Candidate(gated), Candidate(answers("backup"))],
        breaker=Breaker(failures_to_open=1, cooldown_s=10),
        clock=clock,
    )
    await router.respond(HELLO, [])  # opens the circuit
    clock.advance(10)
    gated.release = anyio.Event()
    outcomes: list[str] = []

    async def call() -> None:
        outcomes.append((await router.respond(HELLO, [])).route[0].outcome)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        gated.release.set()
    assert gated.calls == 2  # the first call, then one trial
    assert sorted(outcomes) == ["failed", "skipped", "skipped", "skipped", "skipped"]
