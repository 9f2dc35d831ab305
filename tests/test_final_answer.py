"""A final answer at a limit (``Limits.final_answer``): the model is asked once more with
no tools, its answer capped to what the budgets have left, and the run ends
``limit_exceeded`` with that answer as its output, marked with the limit that forced it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from router import (
    ConfigError,
    Engine,
    Limits,
    ManualClock,
    MemoryStore,
    Message,
    ModelTurn,
    Phase,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    load_run,
    review_run,
    tool,
)
from router.agents import agent_tool
from router.core.events import LimitExceeded, ModelResponded
from router.core.fsm import fold
from router.core.tokens import ByteBound
from router.core.transcript import CUT_OFF, FINAL_ANSWER_PROMPT
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u")
BOUND = ByteBound()


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(inline=True, idempotent=True)
def broken(n: int) -> int:
    """Always fails."""
    raise ValueError(f"broken {n}")


class Asked:
    """A model that calls ``add`` while tools are offered and answers when none are; it
    keeps what each call was offered."""

    name = "asked"

    def __init__(self, answer: str = "best so far", *, loop: bool = False) -> None:
        self.answer, self.loop = answer, loop
        self.offered: list[int] = []
        self.seen: list[Sequence[Message]] = []

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[Any], *, max_tokens: int | None = None
    ) -> ModelTurn:
        self.offered.append(len(tools))
        self.seen.append(list(messages))
        if not tools:
            return say(self.answer)
        n = 1 if self.loop else len(self.offered)
        return call("add", f'{{"a": {n}, "b": 1}}')


def test_final_answer_is_a_choice_made_plainly() -> None:
    assert Limits().final_answer is False  # a hard limit calls nothing more unless asked
    with pytest.raises(ConfigError, match="final_answer"):
        Limits(final_answer=1)  # type: ignore[arg-type]


async def test_at_the_step_limit_the_last_step_is_an_answer_with_no_tools() -> None:
    store, model = MemoryStore(), Asked()
    eng = Engine(store, model, Tools([add]))
    result = await eng.start("go", principal=USER, limits=Limits(max_steps=4, final_answer=True))
    assert result.phase is Phase.LIMIT_EXCEEDED and result.forced == "max_steps"
    assert result.output == "best so far" and result.steps == 4 and model.offered == [1, 1, 1, 0]
    assert model.seen[-1][-1] == Message(
        role="user", content=FINAL_ANSWER_PROMPT.format(limit="max_steps")
    )
    assert "kept for the final answer" in result.reason
    events, state, _ = await load_run(store, result.run_id)
    last = events[-1]
    assert isinstance(last, ModelResponded) and last.forced == "max_steps"
    assert state.forced == "max_steps" and state.output == "best so far"
    assert (await eng.replay(result.run_id)).identical


async def test_the_export_names_a_forced_answer(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from router.export.arrow import export, verify_export

    async with SqliteStore.open(tmp_path / "log.db") as store:
        await Engine(store, Asked(), Tools([add])).start(
            "go", principal=USER, limits=Limits(max_steps=2, final_answer=True)
        )
        await export(store, tmp_path / "runs.parquet")
    rows = pq.read_table(tmp_path / "runs.parquet").to_pylist()
    assert [r["outcome"] for r in rows if r["kind"] == "model_responded"] == [
        "tool_calls",
        "forced_answer",
    ]
    verify_export([tmp_path / "runs.parquet"])


async def test_without_final_answer_a_limit_calls_nothing_more() -> None:
    model = Asked()
    result = await Engine(MemoryStore(), model, Tools([add])).start(
        "go", principal=USER, limits=Limits(max_steps=3)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.output == "" and result.forced == ""
    assert model.offered == [1, 1, 1]


async def test_a_call_cut_off_by_a_loop_is_shown_to_the_model_as_not_run() -> None:
    store, model = MemoryStore(), Asked(loop=True)
    eng = Engine(store, model, Tools([add]))
    result = await eng.start("go", principal=USER, limits=Limits(final_answer=True))
    assert result.forced == "loop_detected" and result.output == "best so far"
    assert result.tool_calls == 2 and model.offered[-1] == 0
    cut, prompt = model.seen[-1][-2:]
    assert cut.role == "tool" and cut.content == CUT_OFF and cut.call_id
    assert prompt.content == FINAL_ANSWER_PROMPT.format(limit="loop_detected")
    assert (await eng.replay(result.run_id)).identical


async def test_failures_in_a_row_and_rejected_calls_force_an_answer_too() -> None:
    def failing(messages: Sequence[Message]) -> ModelTurn:
        if messages[-1].role == "user" and "final answer" in messages[-1].content:
            return say("it keeps failing")
        return call("broken", f'{{"n": {len(messages)}}}')

    result = await Engine(MemoryStore(), ScriptedModel(failing), Tools([broken])).start(
        "go", principal=USER, limits=Limits(max_failures_in_a_row=2, final_answer=True)
    )
    assert result.forced == "max_failures_in_a_row" and result.output == "it keeps failing"

    def invalid(messages: Sequence[Message]) -> ModelTurn:
        if messages[-1].role == "user" and "final answer" in messages[-1].content:
            return say("gave up")
        return call("add", '{"a": "x"}')

    result = await Engine(MemoryStore(), ScriptedModel(invalid), Tools([add])).start(
        "go", principal=USER, limits=Limits(max_rejected_calls=1, final_answer=True)
    )
    assert result.forced == "max_rejected_calls" and result.output == "gave up"


async def test_tools_proposed_in_a_forced_answer_are_not_taken() -> None:
    script = [call("add", '{"a": 1, "b": 1}'), call("add", '{"a": 2, "b": 1}')]
    model = ScriptedModel(script + [ModelTurn(text="two", tool_calls=script[0].tool_calls)])
    store = MemoryStore()
    result = await Engine(store, model, Tools([add])).start(
        "go", principal=USER, limits=Limits(max_steps=3, final_answer=True)
    )
    assert result.output == "two" and result.tool_calls == 2
    events, _, _ = await load_run(store, result.run_id)
    assert isinstance(events[-1], ModelResponded) and events[-1].tool_calls == ()


async def test_no_answer_still_ends_with_an_output_that_says_why() -> None:
    class Down:
        name = "down"
        calls = 0

        async def respond(self, messages: Any, tools: Sequence[Any]) -> ModelTurn:
            self.calls += 1
            if not tools:
                raise ConnectionError("provider down")
            return call("add", f'{{"a": {self.calls}, "b": 1}}')

    from router import Retry

    result = await Engine(MemoryStore(), Down(), Tools([add]), model_retry=Retry(attempts=1)).start(
        "go", principal=USER, limits=Limits(max_steps=2, final_answer=True)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.forced == "max_steps"
    assert "no final answer" in result.reason and "provider down" in result.reason
    assert result.output.startswith("No answer: the run stopped at a limit")

    empty = await Engine(MemoryStore(), Asked(answer="  "), Tools([add])).start(
        "go", principal=USER, limits=Limits(max_steps=2, final_answer=True)
    )
    assert "the model's answer was empty" in empty.reason and empty.output.startswith("No answer")


async def test_a_deadline_ends_the_run_at_once_with_no_last_call() -> None:
    clock = ManualClock(0)
    model = Asked()

    async def slow(messages: Sequence[Message], tools: Sequence[Any]) -> ModelTurn:
        clock.advance(10)
        return await model.respond(messages, tools)

    slow_model = type("Slow", (), {"name": "slow", "respond": staticmethod(slow)})()
    result = await Engine(Runtime(MemoryStore(), clock=clock), slow_model, Tools([add])).start(
        "go", principal=USER, limits=Limits(deadline_s=15, final_answer=True)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("deadline")
    assert result.forced == "" and result.output == "" and model.offered == [1, 1]


async def test_the_last_answer_fits_what_the_budget_has_left() -> None:
    model = Random([("add", 1), ("add", 2)], wants=[300, 300, 5_000], last="the last word")
    limits = Limits(max_steps=3, max_total_tokens=1_500, final_answer=True)
    prices = PriceTable({"m": Price(1.0, 4.0)})
    result = await Engine(MemoryStore(), model, Tools([add]), prices=prices).start(
        "go", principal=USER, limits=limits
    )
    assert result.forced == "max_steps" and result.output == "the last word"
    cap = model.caps[-1]
    assert cap is not None and 0 < cap < 5_000 and result.usage.total_tokens <= 1_500


async def test_a_spent_budget_leaves_no_room_for_a_last_call() -> None:
    def costly(messages: Sequence[Message]) -> ModelTurn:
        if messages[-1].role == "user" and "final answer" in messages[-1].content:
            raise AssertionError("asked with nothing left")
        return call("add", f'{{"a": {len(messages)}, "b": 1}}', usage=Usage(output_tokens=500))

    model = ScriptedModel(costly)
    result = await Engine(MemoryStore(), model, Tools([add])).start(
        "go", principal=USER, limits=Limits(max_output_tokens=500, final_answer=True)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.forced == "max_output_tokens"
    assert "no final answer" in result.reason and result.output.startswith("No answer")
    assert result.usage.output_tokens <= 500


async def test_a_forced_answer_goes_through_the_output_check() -> None:
    store = MemoryStore()

    def check(text: str) -> str | None:
        return "needs a look" if "secret" in text else None

    def engine() -> Engine:
        return Engine(store, Asked(answer="the secret plan"), Tools([add]), output_check=check)

    limits = Limits(max_steps=2, final_answer=True)
    held = await engine().start("go", principal=USER, run_id="a", limits=limits)
    assert held.phase is Phase.AWAITING_REVIEW and held.review == "output_check"
    await review_run(store, "a", "approve", by="ann")
    approved = await engine().resume("a")
    assert approved.phase is Phase.LIMIT_EXCEEDED and approved.output == "the secret plan"
    assert approved.forced == "max_steps"

    await engine().start("go", principal=USER, run_id="b", limits=limits)
    await review_run(store, "b", "reject", by="ann", note="not that")
    rejected = await engine().resume("b")
    assert rejected.phase is Phase.LIMIT_EXCEEDED and "ann rejected it" in rejected.reason
    assert rejected.output.startswith("No answer")


async def test_a_run_that_crashes_while_answering_asks_again_on_resume() -> None:
    class Crash(BaseException):
        """Stands for kill -9 during the last call."""

    store = MemoryStore()
    crashes = [True]

    async def respond(messages: Sequence[Message], tools: Sequence[Any]) -> ModelTurn:
        if not tools:
            if crashes and crashes.pop():
                raise Crash
            return say("answered after the crash")
        return call("add", f'{{"a": {len(messages)}, "b": 1}}')

    model = type("M", (), {"name": "m", "respond": staticmethod(respond)})()

    def engine() -> Engine:
        return Engine(Runtime(store, owner="t"), model, Tools([add]))

    limits = Limits(max_steps=2, final_answer=True)
    with pytest.raises(Crash):
        await engine().start("go", principal=USER, run_id="r", limits=limits)
    await store.release_lease("r", "t")
    result = await engine().resume("r")
    assert result.forced == "max_steps" and result.output == "answered after the crash"
    assert result.steps == 2
    assert (await engine().replay("r")).identical


async def test_a_child_agents_forced_answer_reaches_its_parent_said_to_be_one() -> None:
    store = MemoryStore()
    child = Engine(store, Asked(answer="partial"), Tools([add]), agent="child")
    child.limits = Limits(max_steps=2, final_answer=True)
    ask = agent_tool(child, name="ask", description="Ask a child agent.")
    heard: list[str] = []

    def parent(messages: Sequence[Message]) -> ModelTurn:
        if messages[-1].role == "tool":
            heard.append(messages[-1].content)
            return say("done")
        return call("ask", '{"task": "sum things"}')

    result = await Engine(store, ScriptedModel(parent), Tools([ask])).start("go", principal=USER)
    assert result.phase is Phase.DONE
    answer = json.loads(heard[0])
    assert (
        answer.startswith("partial") and "stopped at a limit (max_steps): its last answer" in answer
    )


# --- random runs ---------------------------------------------------------------------------

TURN = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2)),  # a valid call; few values, so loops happen
    st.tuples(st.just("broken"), st.integers(0, 2)),  # a call that fails
    st.tuples(st.just("bad"), st.just(0)),  # an invalid call
    st.tuples(st.just("say"), st.just(0)),  # an answer
)


class Random:
    """Plays ``turns`` while tools are offered (then answers), each turn spending ``wants``
    output tokens at most as the cap allows; asked with no tools, it answers ``last``."""

    name = "m"

    def __init__(self, turns: list[tuple[str, int]], wants: list[int], last: str) -> None:
        self.turns, self.wants, self.last = turns, wants, last
        self.caps: list[int | None] = []
        self.untooled = 0

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[Any], *, max_tokens: int | None = None
    ) -> ModelTurn:
        n = len(self.caps)
        self.caps.append(max_tokens)
        want = self.wants[n % len(self.wants)]
        out = want if max_tokens is None else min(want, max_tokens)
        usage = Usage(input_tokens=sum(BOUND.count(m.content) for m in messages), output_tokens=out)
        if not tools:
            self.untooled += 1
            return ModelTurn(text=self.last, usage=usage)
        kind, value = self.turns[n % len(self.turns)] if n < 3 * len(self.turns) else ("say", 0)
        if kind == "say":
            return ModelTurn(text="answered", usage=usage)
        arguments = {
            "add": f'{{"a": {value}, "b": 1}}',
            "broken": f'{{"n": {value}}}',
            "bad": '{"a": "x"}',
        }[kind]
        name = "add" if kind == "bad" else kind
        return ModelTurn(tool_calls=(ProposedCall(f"c{n}", name, arguments),), usage=usage)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.lists(TURN, min_size=1, max_size=8),
    wants=st.lists(st.integers(0, 600), min_size=1, max_size=4),
    last=st.sampled_from(["the best answer", "", "ok"]),
    max_steps=st.integers(0, 8),
    max_tool_calls=st.integers(0, 6),
    total=st.one_of(st.none(), st.integers(1, 4_000)),
    dollars=st.one_of(st.none(), st.integers(1, 5_000)),  # millionths of a dollar
    repeats=st.integers(1, 3),
    rejected=st.integers(0, 3),
    failures=st.integers(1, 3),
)
def test_random_runs_that_hit_a_limit_end_with_a_forced_output_and_pass_no_ceiling(
    turns: list[tuple[str, int]],
    wants: list[int],
    last: str,
    max_steps: int,
    max_tool_calls: int,
    total: int | None,
    dollars: int | None,
    repeats: int,
    rejected: int,
    failures: int,
) -> None:
    limits = Limits(
        max_steps=max_steps,
        max_tool_calls=max_tool_calls,
        max_total_tokens=total,
        max_cost_usd=None if dollars is None else dollars / 1e6,
        max_repeats=repeats,
        max_rejected_calls=rejected,
        max_failures_in_a_row=failures,
        final_answer=True,
    )
    prices = PriceTable({"m": Price(0.6, 3.0)})

    async def one() -> None:
        store = MemoryStore()
        model = Random(turns, wants, last)
        eng = Engine(store, model, Tools([add, broken]), prices=prices)
        result = await eng.start("go", principal=USER, limits=limits)
        assert result.phase in (Phase.DONE, Phase.LIMIT_EXCEEDED), result
        if result.phase is Phase.LIMIT_EXCEEDED:
            assert result.output.strip() and result.forced, result
            events, state, _ = await load_run(store, result.run_id)
            assert state.forced == result.forced and state.output == result.output
            first = next(e for e in events if isinstance(e, LimitExceeded))
            assert first.limit == result.forced
            assert model.untooled <= 1  # one last call at most, and only then
            if model.untooled:
                assert isinstance(events[-1], ModelResponded) and events[-1].forced
            assert fold(events).phase is Phase.LIMIT_EXCEEDED
            event(f"forced by {result.forced}, {'answered' if model.untooled else 'no call'}")
        else:
            event("done")
        assert result.steps <= max_steps and len(model.caps) <= max_steps
        assert result.tool_calls <= max_tool_calls
        if total is not None:
            assert result.usage.total_tokens <= total, result
        if dollars is not None:
            assert round(result.cost_usd * 1e9) <= dollars * 1_000, result
        assert (await eng.replay(result.run_id)).identical

    anyio.run(one)
