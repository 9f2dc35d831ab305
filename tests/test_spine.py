"""One spine under every kind of run: a secret never reaches the disk or an observer on any
path that writes a run's log, and a parent's ceiling binds the child runs it starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from router import (
    END,
    Engine,
    Graph,
    GraphEngine,
    Limits,
    Phase,
    Price,
    PriceTable,
    Principal,
    Redaction,
    ReviewRules,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    fork_run,
    load_run,
    resolve_call,
    review_run,
    tool,
)
from router.agents import agent_tool, debate, handoff_tool, reflection
from router.core.events import Event, ModelResponded, encode_event
from router.graph import NodeContext, subgraph
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u")
CARD = "4111 1111 1111 1111"
PASSWORD = "hunter2-secret"
SECRETS = (CARD.encode(), CARD.replace(" ", "").encode(), PASSWORD.encode())
POLICY = Redaction(patterns={"card": r"\b\d{4}(?:[ -]?\d{4}){3}\b"}, fields={"Password"})


class Seen:
    """An observer that keeps the bytes of every event it was shown."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def committed(self, run_id: str, events: Sequence[Event]) -> None:
        self.payloads.extend(encode_event(e) for e in events)


def assert_no_secret(folder: Path, seen: Seen) -> None:
    files = [p for p in folder.iterdir() if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) or files  # the log and its WAL
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} reached {path.name}"
    assert seen.payloads
    for payload in seen.payloads:
        for secret in SECRETS:
            assert secret not in payload, f"{secret!r} reached an observer"


def runtime(store: SqliteStore, seen: Seen) -> Runtime:
    return Runtime(store, observers=[seen], owner="o")


@tool(idempotent=True)
def charge(card: str, password: str) -> str:
    """Charge a card."""
    return f"charged {card}"


@tool(idempotent=True)
def decline(card: str) -> str:
    """Charge a card, which is declined."""
    raise ValueError(f"card {card} declined")


@tool
def pay(card: str) -> str:
    """Pay with a card: a side effect."""
    raise KeyboardInterrupt  # the process dies after the effect, before its result is recorded


async def test_a_reviewers_edited_arguments_never_reach_the_disk(tmp_path: Path) -> None:
    seen = Seen()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt = runtime(store, seen)
        script = [call("charge", '{"card": "x", "password": "y"}'), say("done")]
        engine = Engine(
            rt,
            ScriptedModel(script),
            Tools([charge]),
            redaction=POLICY,
            review=ReviewRules(before_tools=frozenset({"charge"})),
        )
        held = await engine.start("pay", principal=USER, run_id="r")
        assert held.phase is Phase.AWAITING_REVIEW
        await review_run(
            rt, "r", "approve", arguments={"card": CARD, "password": PASSWORD}, by="ann"
        )
        assert (await engine.resume("r")).phase is Phase.DONE
    assert_no_secret(tmp_path, seen)


async def test_a_supplied_result_never_reaches_the_disk(tmp_path: Path) -> None:
    seen = Seen()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt = runtime(store, seen)
        engine = Engine(
            rt,
            ScriptedModel([call("pay", '{"card": "on file"}'), say("ok")]),
            Tools([pay]),
            redaction=POLICY,
        )
        with pytest.raises(KeyboardInterrupt):
            await engine.start("pay", principal=USER, run_id="r")
        await store.release_lease("r", "o")
        assert (await engine.resume("r")).phase is Phase.INTERRUPTED
        await resolve_call(
            rt, "r", "call_1_0", "supply", result={"card": CARD, "Password": PASSWORD}
        )
        assert (await engine.resume("r")).phase is Phase.DONE
    assert_no_secret(tmp_path, seen)


async def test_malformed_arguments_and_tool_errors_never_reach_the_disk(tmp_path: Path) -> None:
    seen = Seen()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        script = [
            call("charge", '{"card": "x", "PASSWORD": "' + PASSWORD + '"'),  # cut short: not JSON
            call("decline", '{"card": "' + CARD + '"}'),
            say("gave up"),
        ]
        engine = Engine(
            runtime(store, seen), ScriptedModel(script), Tools([charge, decline]), redaction=POLICY
        )
        result = await engine.start("pay", principal=USER, run_id="r")
        assert result.phase is Phase.DONE
        events, _, _ = await load_run(store, "r")
        kinds = [type(e).__name__ for e in events]
        assert "ToolCallRejected" in kinds and "ToolFailed" in kinds
    assert_no_secret(tmp_path, seen)


async def test_child_agents_inherit_the_parents_redaction(tmp_path: Path) -> None:
    seen = Seen()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt = runtime(store, seen)
        helper = Engine(
            rt, ScriptedModel([say("the helper is done")]), Tools([]), agent="helper"
        )  # no policy of its own
        billing = Engine(rt, ScriptedModel([say("billing took over")]), Tools([]), agent="billing")
        tools = Tools(
            [
                agent_tool(helper, name="ask", description="Ask the helper."),
                handoff_tool(billing, name="to_billing", description="Hand over to billing."),
            ]
        )
        script = [
            call("ask", '{"task": "check ' + CARD + '"}'),
            call("to_billing", '{"note": "card ' + CARD + '"}'),
        ]
        parent = Engine(rt, ScriptedModel(script), tools, redaction=POLICY)
        result = await parent.start(f"my card is {CARD}", principal=USER, run_id="p")
        assert result.phase is Phase.DONE and result.output == "billing took over"
        children = [r.run_id for r in await store.runs() if r.run_id != "p"]
        assert len(children) == 2
        for child in children:
            events, _, _ = await load_run(store, child)
            assert events[0].redaction.patterns == {"card": POLICY.describe()["patterns"]["card"]}  # type: ignore[attr-defined]
    assert_no_secret(tmp_path, seen)


async def test_graph_state_and_updates_never_reach_the_disk(tmp_path: Path) -> None:
    seen = Seen()

    async def read(state: dict[str, Any]) -> dict[str, Any]:
        return {"note": f"charged {state['card']}", "password": state["password"]}

    g = Graph("secrets")
    g.add_node("read", read)
    g.start("read")
    g.edge("read", END)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = GraphEngine(runtime(store, seen), g.compile(), redaction=POLICY)
        result = await engine.start(
            {"card": CARD, "password": PASSWORD}, principal=USER, run_id="g"
        )
        assert (
            result.phase == "done" and result.state["note"] == f"charged {CARD}"
        )  # the live run has the values
    assert_no_secret(tmp_path, seen)


async def test_a_forks_then_events_never_reach_the_disk(tmp_path: Path) -> None:
    seen = Seen()
    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt = runtime(store, seen)
        engine = Engine(rt, ScriptedModel([say("first answer")]), Tools([]), redaction=POLICY)
        await engine.start("hi", principal=USER, run_id="r")
        edit = ModelResponded(at=1, step=1, text=f"the card is {CARD}")
        state = await fork_run(rt, "r", 1, new_run_id="f", then=[edit])
        assert state.phase == "done"
        events, _, _ = await load_run(store, "f")
        assert "[redacted:card]" in events[-1].text  # type: ignore[attr-defined]
    assert_no_secret(tmp_path, seen)


# --- a parent's ceiling binds its children --------------------------------------------

CALL_COST = 0.10  # every model turn of a child: 100,000 input tokens at $1 per million
TURN = Usage(input_tokens=100_000)
PRICES = PriceTable({"scripted": Price(input_per_mtok=1.0, output_per_mtok=0.0)})


def spender(rt: Runtime, turns: int) -> Engine:
    """A child agent that would make ``turns`` priced model calls: $0.10 each."""

    @tool(idempotent=True)
    def work(n: int) -> int:
        return n

    script = [call("work", f'{{"n": {i}}}', usage=TURN) for i in range(turns - 1)] + [
        say("done", usage=TURN)
    ]
    return Engine(
        rt, ScriptedModel(script), Tools([work]), prices=PRICES, limits=Limits(max_steps=100)
    )


async def test_a_parents_cost_ceiling_binds_its_child_agent() -> None:
    from router import MemoryStore

    rt = Runtime(MemoryStore())
    child = spender(rt, 10)  # would spend $1.00: four times the parent's ceiling
    parent = Engine(
        rt,
        ScriptedModel([call("delegate", '{"task": "spend"}'), say("done")]),
        Tools([agent_tool(child, name="delegate", description="d")]),
        prices=PRICES,
        limits=Limits(max_cost_usd=0.25),
    )
    result = await parent.start("go", principal=USER, run_id="p")
    assert result.phase is Phase.LIMIT_EXCEEDED and "max_cost_usd" in result.reason
    assert result.cost_usd <= 0.25 + CALL_COST + 1e-9
    _, child_state, _ = await load_run(rt.store, "p/call_1_0")
    assert child_state.phase is Phase.LIMIT_EXCEEDED and child_state.limits.max_cost_usd == 0.25
    assert child_state.cost_nusd / 1e9 <= 0.25 + CALL_COST + 1e-9


async def test_a_debate_under_a_ceiling_ends_limit_exceeded() -> None:
    from router import MemoryStore

    rt = Runtime(MemoryStore())
    debaters = [spender(rt, 10), spender(rt, 10)]
    judge = Engine(
        rt, ScriptedModel([say("CONTINUE: more", usage=TURN)] * 10), Tools([]), prices=PRICES
    )
    engine = GraphEngine(rt, debate(debaters, judge, rounds=3), limits=Limits(max_cost_usd=0.25))
    result = await engine.start(
        {"question": "q", "round": 0, "answers": []}, principal=USER, run_id="g"
    )
    assert result.phase == "limit_exceeded" and "max_cost_usd" in result.reason
    # two debaters at once, each bound to half of what was left: at most one call over each
    assert result.cost_usd <= 0.25 + 2 * CALL_COST + 1e-9


async def test_a_reflection_under_a_ceiling_ends_limit_exceeded() -> None:
    from router import MemoryStore

    rt = Runtime(MemoryStore())
    writer = Engine(rt, ScriptedModel(lambda m: say("draft", usage=TURN)), Tools([]), prices=PRICES)
    critic = Engine(
        rt, ScriptedModel(lambda m: say("fix it", usage=TURN)), Tools([]), prices=PRICES
    )
    engine = GraphEngine(
        rt, reflection(writer, critic, max_rounds=20), limits=Limits(max_cost_usd=0.25)
    )
    result = await engine.start({"task": "write"}, principal=USER, run_id="g")
    assert result.phase == "limit_exceeded" and "max_cost_usd" in result.reason
    assert result.cost_usd <= 0.25 + CALL_COST + 1e-9


async def test_a_subgraph_under_a_ceiling_ends_limit_exceeded() -> None:
    from router import MemoryStore

    rt = Runtime(MemoryStore())
    child_agent = spender(rt, 10)

    async def spend(state: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        from router.agents import run_child

        result = await run_child(child_agent, f"{ctx.run_id}/{ctx.key}", "spend", ctx)
        return {"answer": result.output}

    inner = Graph("inner")
    inner.add_node("spend", spend)
    inner.start("spend")
    inner.edge("spend", END)
    inner_engine = GraphEngine(rt, inner.compile())
    outer = Graph("outer")
    outer.add_node(
        "child",
        subgraph(inner_engine, inputs=lambda s: {}, outputs=lambda s: {"answer": s.get("answer")}),
    )
    outer.start("child")
    outer.edge("child", END)
    engine = GraphEngine(rt, outer.compile(), limits=Limits(max_cost_usd=0.25))
    result = await engine.start({}, principal=USER, run_id="g")
    assert result.phase == "limit_exceeded" and "max_cost_usd" in result.reason
    assert result.cost_usd <= 0.25 + CALL_COST + 1e-9


async def test_a_writer_whose_lease_was_taken_over_stops_with_lease_lost(tmp_path: Path) -> None:
    import anyio

    from router import LeaseHeld, LeaseLost, ManualClock

    clock = ManualClock(1_000_000)

    @tool(idempotent=True)
    async def slow(n: int) -> int:
        while True:  # another replica takes the run once its lease lapses (judged by the store)
            try:
                await store.acquire_lease("r", "other", 30.0)
                break
            except LeaseHeld:
                await anyio.sleep(0)
        clock.advance(10)  # and the writer's next batch is due to renew it
        return n

    async with SqliteStore.open(tmp_path / "log.db") as store:
        rt = Runtime(store, clock=clock, owner="first", lease_ttl_s=0.001)
        engine = Engine(
            rt,
            ScriptedModel([call("slow", '{"n": 1}'), call("slow", '{"n": 2}'), say("done")]),
            Tools([slow]),
        )
        with pytest.raises(LeaseLost):
            await engine.start("go", principal=USER, run_id="r")
        events, state, _ = await load_run(store, "r")
        assert not state.terminal  # the first writer wrote nothing after it lost the run
        assert [type(e).__name__ for e in events] == [
            "RunStarted"
        ]  # the step that ran is not recorded by it


async def test_an_engine_refuses_a_run_of_the_other_kind() -> None:
    from router import ConfigError, MemoryStore

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    g = Graph("g")
    g.add_node("n", node)
    g.start("n")
    g.edge("n", END)
    rt = Runtime(MemoryStore())
    graph = GraphEngine(rt, g.compile())
    agent = Engine(rt, ScriptedModel([say("hi")]), Tools([]))
    await graph.start({}, principal=USER, run_id="g")
    await agent.start("hi", principal=USER, run_id="a")
    for attempt in (
        agent.resume("g", migration="m"),
        agent.replay("g"),
        graph.resume("a", migration="m"),
        graph.replay("a"),
    ):
        with pytest.raises(ConfigError, match="is a graph run|is an agent run"):
            await attempt
    assert [s.kind for s in await rt.store.read("g")][-1] == "step_routed"  # nothing was written


async def test_a_graph_run_refuses_a_principal_that_is_not_one() -> None:
    from router import ConfigError, MemoryStore

    async def node(state: dict[str, Any]) -> dict[str, Any]:
        return {}

    g = Graph("g")
    g.add_node("n", node)
    g.start("n")
    g.edge("n", END)
    engine = GraphEngine(Runtime(MemoryStore()), g.compile())
    with pytest.raises(ConfigError, match="cannot start a graph run"):
        await engine.start({}, principal={"who": 7}, run_id="g")  # type: ignore[arg-type]
    assert await engine.store.read("g") == []
    assert (await engine.start({}, principal={"id": "u"}, run_id="g")).phase == "done"


async def test_a_call_whose_recorded_arguments_were_redacted_fails_on_resume() -> None:
    from router import MemoryStore

    @tool(idempotent=True)
    async def check(pin: int) -> str:
        return "ok"

    rt = Runtime(MemoryStore(), owner="o")
    script = [call("check", '{"pin": 1234}'), say("done")]
    engine = Engine(rt, ScriptedModel(script), Tools([check]), redaction=Redaction(fields={"pin"}))
    assert (await engine.start("go", principal=USER, run_id="r")).phase is Phase.DONE
    await fork_run(rt, "r", 3, new_run_id="f")  # the call started, its result not recorded
    resumed = await engine.resume("f")  # it runs again, from arguments the log redacted
    assert resumed.phase is Phase.DONE
    events, _, _ = await load_run(rt.store, "f")
    failed = [e for e in events if type(e).__name__ == "ToolFailed"]
    assert len(failed) == 1 and "no longer decode" in failed[0].error  # type: ignore[attr-defined]
