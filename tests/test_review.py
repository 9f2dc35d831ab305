"""Human review: a run pauses where a rule says, waits in the log, and goes on as decided."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from router import (
    DecisionError,
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
    ReviewRules,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    load_run,
    review_run,
    tool,
)
from router.core.events import ReviewDecided
from router.core.protocols import Store
from router.core.stored import decode_run
from router.core.transcript import Transcript
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u")


def make(store: Store, script: Any, tools: Sequence[Any], **options: Any) -> Engine:
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    return Engine(
        Runtime(store, clock=ManualClock(0, 10), owner="t"), model, Tools(tools), **options
    )


async def test_a_tool_that_needs_approval_waits_and_runs_with_the_edit() -> None:
    paid: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        paid.append(cents)
        return f"paid {cents}"

    store = MemoryStore()
    rules = ReviewRules(before_tools=frozenset({"pay"}))
    script = [call("pay", '{"cents": 500}'), say("ok")]
    waiting = await make(store, script, [pay], review=rules).start(
        "pay", principal=USER, run_id="r"
    )
    assert (waiting.phase, waiting.review) == (Phase.AWAITING_REVIEW, "before_tool") and paid == []
    again = await make(store, script, [pay], review=rules).resume("r")
    assert again.phase is Phase.AWAITING_REVIEW and paid == []  # waits, however often it is resumed

    state = await review_run(store, "r", "approve", by="ann", arguments={"cents": 300})
    assert state.phase is Phase.RUNNING_TOOLS
    done = await make(store, script, [pay], review=rules).resume("r")
    assert done.phase is Phase.DONE and paid == [300]
    assert (await make(store, [], [pay], review=rules).replay("r")).identical
    with pytest.raises(DecisionError, match="not awaiting review"):
        await review_run(store, "r", "approve")


async def test_a_rejected_call_is_fed_back_to_the_model() -> None:
    @tool
    async def pay(cents: int) -> str:
        raise AssertionError("never runs")

    seen: list[str] = []

    def script(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        return call("pay", '{"cents": 9000}') if len(seen) == 1 else say("understood")

    store = MemoryStore()
    rules = ReviewRules(before_tools=frozenset({"pay"}))
    await make(store, ScriptedModel(script), [pay], review=rules).start(
        "pay", principal=USER, run_id="r"
    )
    await review_run(store, "r", "reject", by="ann", note="too much")
    result = await make(store, ScriptedModel(script), [pay], review=rules).resume("r")
    assert result.phase is Phase.DONE and seen[-1] == "error[rejected_by_reviewer]: too much"


@pytest.mark.parametrize(
    ("decision", "phase", "output"),
    [("approve", Phase.DONE, "the code is 1234"), ("reject", Phase.DONE, "I cannot share that")],
)
async def test_an_answer_the_check_objects_to_waits_for_review(
    decision: Any, phase: Phase, output: str
) -> None:
    def no_codes(text: str) -> str | None:
        return "the answer contains a code" if any(ch.isdigit() for ch in text) else None

    store = MemoryStore()
    script = [say("the code is 1234"), say("I cannot share that")]
    held = await make(store, script, [], output_check=no_codes).start(
        "code?", principal=USER, run_id="r"
    )
    assert (held.phase, held.review, held.output) == (Phase.AWAITING_REVIEW, "output_check", "")
    await review_run(store, "r", decision, note="no codes in answers")
    result = await make(store, script, [], output_check=no_codes).resume("r")
    assert (result.phase, result.output) == (phase, output)
    events, _, _ = await load_run(store, "r")
    if decision == "reject":
        assert (
            Transcript(events).messages[-2].content
            == "A reviewer rejected that answer: no codes in answers"
        )


async def test_cost_failures_and_tool_results_pause_before_the_next_model_call() -> None:
    @tool(inline=True, idempotent=True)
    def lookup(n: int) -> int:
        return n

    @tool(inline=True)
    def flaky(n: int) -> int:
        raise ConnectionError("down")

    store = MemoryStore()
    usage = Usage(input_tokens=1000, output_tokens=0)
    rules = ReviewRules(after_tools=frozenset({"lookup"}), cost_over_usd=0.0015, tool_failures=2)
    script = [
        call("lookup", '{"n": 1}', usage=usage),
        call("flaky", '{"n": 1}', usage=usage),
        call("flaky", '{"n": 2}'),
        say("done"),
    ]
    prices = PriceTable({"scripted": Price(1.0, 1.0)})

    def engine() -> Engine:
        return make(store, script, [lookup, flaky], review=rules, prices=prices)

    first = await engine().start("go", principal=USER, run_id="r")
    assert first.review == "after_tool"  # lookup succeeded: its result waits
    await review_run(store, "r", "approve")
    second = await engine().resume("r")
    assert second.review == "cost"  # two turns at $0.001 each passed $0.0015
    await review_run(store, "r", "approve")
    third = await engine().resume("r")
    assert third.review == "tool_failures"  # two failed calls in a row; cost is not asked again
    await review_run(store, "r", "reject", note="stop")
    final = await engine().resume("r")
    assert (
        final.phase is Phase.FAILED and "tool_failures" in final.reason and "stop" in final.reason
    )
    assert (await engine().replay("r")).identical


def test_router_approve_and_reject_from_the_command_line(tmp_path: Path) -> None:
    import anyio

    @tool
    async def pay(cents: int) -> str:
        return "paid"

    async def start() -> None:
        async with SqliteStore.open(tmp_path / "log.db") as store:
            rules = ReviewRules(before_tools=frozenset({"pay"}))
            await make(store, [call("pay", '{"cents": 5}'), say("ok")], [pay], review=rules).start(
                "go", principal=USER, run_id="r"
            )

    anyio.run(start)
    run = [sys.executable, "-m", "router"]
    bad = subprocess.run(
        [*run, "reject", "nope", "--db", "log.db"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "run_not_found" in bad.stderr
    ok = subprocess.run(
        [*run, "approve", "r", "--edit", '{"cents": 4}', "--db", "log.db", "--by", "ann"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "running_tools" in ok.stdout
    shown = subprocess.run(
        [*run, "show", "r", "--db", "log.db"], cwd=tmp_path, capture_output=True, text=True
    )
    assert (
        "REVIEW        before_tool [call_1_0]" in shown.stdout
        and "reviewed      approve" in shown.stdout
    )


async def test_an_edit_patches_named_arguments_and_an_invalid_one_is_refused_to_the_reviewer() -> (
    None
):
    paid: list[tuple[int, str]] = []

    @tool
    async def pay(cents: int, currency: str) -> str:
        paid.append((cents, currency))
        return "paid"

    store = MemoryStore()
    rules = ReviewRules(before_tools=frozenset({"pay"}))
    script = [call("pay", '{"cents": 500, "currency": "EUR"}'), say("ok")]
    engine = make(store, script, [pay], review=rules)
    await engine.start("pay", principal=USER, run_id="r")
    with pytest.raises(DecisionError, match=r"refused: invalid_arguments at \$\.cents"):
        await review_run(store, "r", "approve", edit={"cents": "lots"}, tools=engine.tools)
    with pytest.raises(DecisionError, match="not both"):
        await review_run(store, "r", "approve", edit={"cents": 1}, arguments={"cents": 1})
    with pytest.raises(DecisionError, match="only an approval"):
        await review_run(store, "r", "reject", edit={"cents": 1})
    state = await review_run(store, "r", "approve", edit={"cents": 300}, tools=engine.tools)
    decided = decode_run(await store.read("r"))[-1]
    assert isinstance(decided, ReviewDecided) and decided.edited == ("cents",)
    assert state.phase is Phase.RUNNING_TOOLS
    assert (await engine.resume("r")).phase is Phase.DONE
    assert paid == [(300, "EUR")]  # the currency kept as proposed


# --- time: a budget of active time, and an absolute expiry ------------------------------


async def test_time_waiting_for_a_person_or_a_resume_does_not_count_against_the_deadline() -> None:
    @tool
    async def pay(cents: int) -> str:
        return "paid"

    clock = ManualClock(1_000_000, 10)
    store = MemoryStore()

    def engine() -> Engine:
        return Engine(
            Runtime(store, clock=clock, owner="t"),
            ScriptedModel([call("pay", '{"cents": 5}'), say("ok")]),
            Tools([pay]),
            review=ReviewRules(before_tools=frozenset({"pay"})),
        )

    limits = Limits(deadline_s=30)
    waiting = await engine().start("pay", principal=USER, run_id="r", limits=limits)
    assert waiting.phase is Phase.AWAITING_REVIEW
    clock.advance(3_600)  # the reviewer takes an hour
    await review_run(Runtime(store, clock=clock, owner="ann"), "r", "approve", by="ann")
    clock.advance(600)  # and the service resumes it ten minutes later
    done = await engine().resume("r")
    assert done.phase is Phase.DONE, done.reason
    _, state, _ = await load_run(store, "r")
    assert state.paused_us >= 4_200 * 1_000_000


async def test_an_expiry_is_absolute_and_ends_a_run_resumed_after_it() -> None:
    clock = ManualClock(1_000_000, 10)
    store = MemoryStore()

    @tool
    async def pay(cents: int) -> str:
        return "paid"

    def engine() -> Engine:
        return Engine(
            Runtime(store, clock=clock, owner="t"),
            ScriptedModel([call("pay", '{"cents": 5}'), say("ok")]),
            Tools([pay]),
            review=ReviewRules(before_tools=frozenset({"pay"})),
        )

    limits = Limits(expires_at=1 + 60)  # a minute after the run starts, on the run's clock
    await engine().start("pay", principal=USER, run_id="r", limits=limits)
    clock.advance(120)
    await review_run(Runtime(store, clock=clock, owner="ann"), "r", "approve")
    ended = await engine().resume("r")
    assert ended.phase is Phase.LIMIT_EXCEEDED and ended.reason.startswith("expires_at")


async def test_a_run_resumed_long_after_a_crash_keeps_its_deadline_of_active_time() -> None:
    class Crash(BaseException):
        """Stands for kill -9 between steps."""

    clock = ManualClock(1_000_000, 10)
    store = MemoryStore()
    crashes = [True]

    @tool(idempotent=True)
    async def lookup(customer_id: int) -> str:
        """Read a customer."""
        if crashes.pop() if crashes else False:
            raise Crash
        return "enterprise"

    def engine() -> Engine:
        return Engine(
            Runtime(store, clock=clock, owner="t", lease_ttl_s=30),
            ScriptedModel([call("lookup", '{"customer_id": 42}'), say("enterprise")]),
            Tools([lookup]),
        )

    with pytest.raises(Crash):
        await engine().start("plan?", principal=USER, run_id="r", limits=Limits(deadline_s=30))
    await store.release_lease("r", "t")  # the lease lapses while the process is down
    clock.advance(31)  # the README's case: resumed 30.7 s later once ended limit_exceeded
    done = await engine().resume("r")
    assert done.phase is Phase.DONE and done.output == "enterprise"
