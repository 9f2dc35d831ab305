"""Agents as tools of agents: child runs linked to their parents, budgets that roll up,
resume that finds the child again, and no child left behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    Engine,
    Limits,
    MemoryStore,
    Message,
    ModelTurn,
    Phase,
    Principal,
    ReviewRules,
    Runtime,
    ScriptedModel,
    Tools,
    Usage,
    load_run,
    tool,
)
from router.agents import agent_tool
from router.core.protocols import Store
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
USER = Principal(id="u")
U = Usage(input_tokens=300, output_tokens=30)


def worker(store: Store, script: Any, *tools: Any, **options: Any) -> Engine:
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    return Engine(Runtime(store, owner="w"), model, Tools(tools), agent="worker", **options)


def boss(store: Store, child: Engine, script: Any, **options: Any) -> Engine:
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    return Engine(
        Runtime(store, owner="b"),
        model,
        Tools([agent_tool(child, name="delegate", description="Give a task to the worker.")]),
        agent="boss",
        **options,
    )


async def test_a_child_run_is_linked_both_ways_and_its_spend_rolls_up() -> None:
    store = MemoryStore()
    child = worker(store, [say("done the task", usage=U)])
    parent = boss(
        store, child, [call("delegate", '{"task": "do it"}', usage=U), say("all done", usage=U)]
    )
    result = await parent.start("go", principal=USER, run_id="p")
    assert result.phase is Phase.DONE and result.usage.total_tokens == 3 * 330
    child_events, child_state, _ = await load_run(store, "p/call_1_0")
    assert child_events[0].parent_run_id == "p" and child_state.output == "done the task"  # type: ignore[attr-defined]
    parent_events, _, _ = await load_run(store, "p")
    succeeded = [e for e in parent_events if type(e).__name__ == "ToolSucceeded"][0]
    assert succeeded.child_run_id == "p/call_1_0" and succeeded.usage.total_tokens == 330  # type: ignore[attr-defined]
    assert (await parent.replay("p")).identical and (await child.replay("p/call_1_0")).identical


async def test_a_childs_tokens_count_against_the_parents_budget() -> None:
    store = MemoryStore()
    big = Usage(input_tokens=5000, output_tokens=0)
    child = worker(store, [say("expensive", usage=big)])
    parent = boss(store, child, [call("delegate", '{"task": "x"}'), say("never")])
    result = await parent.start("go", principal=USER, limits=Limits(max_total_tokens=1000))
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("max_total_tokens")


class Crash(BaseException):
    pass


async def test_a_resumed_parent_resumes_its_child_instead_of_starting_another() -> None:
    store = MemoryStore()
    calls = 0

    def flaky_worker(messages: Sequence[Message]) -> ModelTurn:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Crash  # the process dies inside the child
        return say("finished after the crash")

    child = worker(store, ScriptedModel(flaky_worker))
    parent = boss(store, child, [call("delegate", '{"task": "x"}'), say("ok")])
    with pytest.raises(Crash):
        await parent.start("go", principal=USER, run_id="p")
    for run_id, owner in (("p", "b"), ("p/call_1_0", "w")):
        await store.release_lease(run_id, owner)
    result = await parent.resume("p")
    assert result.phase is Phase.DONE
    assert sorted(r.run_id for r in await store.runs()) == ["p", "p/call_1_0"]  # one child, resumed
    _, child_state, _ = await load_run(store, "p/call_1_0")
    assert child_state.output == "finished after the crash"


async def test_cancelling_the_parent_cancels_the_child() -> None:
    store = MemoryStore()
    inside = anyio.Event()

    @tool(idempotent=True)
    async def wait() -> str:
        inside.set()
        await anyio.sleep_forever()
        return ""

    child = worker(store, [call("wait", "{}")], wait)
    parent = boss(store, child, [call("delegate", '{"task": "x"}')])
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: parent.start("go", principal=USER, run_id="p"))
        await inside.wait()
        tg.cancel_scope.cancel()
    for run_id in ("p", "p/call_1_0"):
        _, state, _ = await load_run(store, run_id)
        assert state.phase is Phase.CANCELLED, run_id


async def test_a_child_that_stops_to_wait_is_ended_and_the_parent_hears_why() -> None:
    store = MemoryStore()

    @tool
    async def pay() -> str:
        return "paid"

    child = worker(
        store,
        [call("pay", "{}"), say("paid")],
        pay,
        review=ReviewRules(before_tools=frozenset({"pay"})),
    )
    seen: list[str] = []

    def parent_model(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        return call("delegate", '{"task": "pay"}') if len(seen) == 1 else say("could not pay")

    result = await boss(store, child, ScriptedModel(parent_model)).start(
        "go", principal=USER, run_id="p"
    )
    assert result.phase is Phase.DONE and "awaiting_review" in seen[-1]
    _, child_state, _ = await load_run(store, "p/call_1_0")
    assert child_state.phase is Phase.CANCELLED and "went on without it" in child_state.reason


@pytest.mark.parametrize("example", ["supervisor_worker", "hierarchical"])
def test_the_examples_run_offline(example: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{example}.py"), str(tmp_path / "log.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "done" in out
    if example == "hierarchical":
        assert out.count("parent run_") == 3  # team lead, and its two specialists


def answers(store: Store, agent: str, *said: str) -> Engine:
    """An agent whose runs answer in turn."""
    given = iter(said)
    return Engine(store, ScriptedModel(lambda messages: say(next(given))), Tools([]), agent=agent)


async def test_a_handoff_answers_for_the_run_with_the_chosen_context() -> None:
    from router.agents import handoff_tool

    for context, expect_user in (("conversation", True), ("task", False)):
        store = MemoryStore()
        seen: list[Sequence[Message]] = []

        def billing_model(
            messages: Sequence[Message], seen: list[Sequence[Message]] = seen
        ) -> ModelTurn:
            seen.append(list(messages))
            return say("refund on Friday")

        billing = Engine(store, ScriptedModel(billing_model), Tools([]), agent="billing")
        desk = Engine(
            store,
            ScriptedModel([call("to_billing", '{"note": "duplicate charge"}')]),
            Tools(
                [handoff_tool(billing, name="to_billing", description="billing", context=context)]
            ),
        )
        result = await desk.start("charged twice!", principal=USER, run_id="p")  # type: ignore[arg-type]
        assert (result.phase, result.output) == (Phase.DONE, "refund on Friday")
        contents = [m.content for m in seen[0]]
        assert contents[-1] == "duplicate charge" and ("charged twice!" in contents) is expect_user
        assert (await desk.replay("p")).identical


async def test_debate_reflection_and_negotiation_are_bounded_graphs_of_child_runs() -> None:
    from router.agents import debate, negotiation, reflection
    from router.graph import GraphEngine

    store = MemoryStore()
    flow = debate(
        [answers(store, "a", "x1", "x2"), answers(store, "b", "y1", "y2")],
        answers(store, "judge", "CONTINUE: unsure", "FINAL: x"),
        rounds=2,
    )
    result = await GraphEngine(store, flow).start(
        {"question": "q", "round": 0, "answers": []}, principal=USER, run_id="d"
    )
    assert (
        result.phase == "done"
        and result.state["verdict"] == "x"
        and len(result.state["answers"]) == 4
    )
    children = [r.run_id for r in await store.runs() if r.run_id.startswith("d/")]
    assert len(children) == 6  # 2 rounds x (2 debaters + the judge)
    events, _, _ = await load_run(store, children[0])
    assert events[0].parent_run_id == "d"  # type: ignore[attr-defined]

    never = reflection(
        answers(store, "w", "d1", "d2", "d3", "d4"), lambda draft: "no", max_rounds=3
    )
    bounded = await GraphEngine(store, never).start({"task": "t"}, principal=USER)
    assert bounded.phase == "done" and bounded.state["round"] == 3 and not bounded.state["accepted"]
    critic = answers(store, "critic", "fix the units", "OK")
    fixed = await GraphEngine(
        store, reflection(answers(store, "w2", "150", "150 EUR"), critic)
    ).start({"task": "fee?"}, principal=USER)
    assert fixed.state["accepted"] and fixed.state["draft"] == "150 EUR"

    haggle = negotiation(
        answers(store, "buyer", *["800"] * 5),
        answers(store, "seller", *["1000"] * 5),
        agreed=lambda offer: False,
        max_exchanges=5,
    )
    stalled = await GraphEngine(store, haggle).start({"topic": "price"}, principal=USER)
    assert (
        stalled.phase == "done" and stalled.state["exchanges"] == 5 and not stalled.state["agreed"]
    )


@pytest.mark.parametrize("example", ["handoff", "debate_reflection_negotiation"])
def test_the_pattern_examples_run_offline(example: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{example}.py"), str(tmp_path / "log.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("done") >= (3 if example != "handoff" else 1)


async def test_a_limiter_caps_active_children_and_a_timeout_ends_a_slow_one() -> None:
    from router.core.protocols import ProposedCall

    store = MemoryStore()
    active = peak = 0
    release = anyio.Event()

    @tool(idempotent=True)
    async def work() -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if peak >= 2:
            release.set()
        await release.wait()
        active -= 1
        return "done"

    child = worker(
        store, lambda messages: call("work", "{}") if len(messages) == 1 else say("ok"), work
    )
    limiter = anyio.CapacityLimiter(2)
    turn = ModelTurn(
        tool_calls=tuple(ProposedCall(f"c{i}", "delegate", f'{{"task": "t{i}"}}') for i in range(6))
    )
    parent = Engine(
        store,
        ScriptedModel([turn, say("all done")]),
        Tools([agent_tool(child, name="delegate", description="d", limiter=limiter)]),
    )
    result = await parent.start("go", principal=USER)
    assert result.phase is Phase.DONE and peak == 2

    @tool(idempotent=True)
    async def forever() -> str:
        await anyio.sleep_forever()
        return ""

    slow = worker(store, [call("forever", "{}")], forever)
    seen: list[str] = []

    def boss_model(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        return call("delegate", '{"task": "t"}') if len(seen) == 1 else say("gave up")

    impatient = Engine(
        store,
        ScriptedModel(boss_model),
        Tools([agent_tool(slow, name="delegate", description="d", timeout_s=0.05)]),
        limits=Limits(tool_timeout_s=None),
    )
    outcome = await impatient.start("go", principal=USER, run_id="p2")
    assert outcome.phase is Phase.DONE and outcome.output == "gave up"
    assert "timed out after 0.05 s" in seen[1]  # the supervisor's model heard it, and why
    _, child_state, _ = await load_run(store, "p2/call_1_0")
    assert child_state.phase is Phase.CANCELLED  # the overrunning child is ended, recorded
