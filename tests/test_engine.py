"""The driver end to end: limits, tools, concurrency, cancellation, resume, decisions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router import (
    ChainBroken,
    ConfigError,
    DecisionError,
    Engine,
    LeaseHeld,
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
    Retry,
    RunNotFound,
    Runtime,
    ScriptedModel,
    SequentialIds,
    SqliteStore,
    Tools,
    Usage,
    load_run,
    resolve_call,
    tool,
)
from router.core.chain import verify
from router.core.events import (
    RunInterrupted,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    decode_event,
    encode_event,
)
from router.core.protocols import Store
from router.core.stored import decode_run
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u", roles=frozenset({"ops"}))


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def engine(
    store: Store, script: Any, *tools_: Any, clock: ManualClock | None = None, **options: Any
) -> Engine:
    return Engine(
        Runtime(
            store, clock=clock or ManualClock(1_000_000, 10), ids=SequentialIds(), owner="test"
        ),
        script if isinstance(script, ScriptedModel) else ScriptedModel(script),
        Tools(tools_ or (add,)),
        **options,
    )


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        async with SqliteStore.open(tmp_path / "log.db") as sqlite_store:
            yield sqlite_store


async def kinds(store: Store, run_id: str) -> list[str]:
    return [e.kind for e in await store.read(run_id)]


async def test_a_react_loop_runs_to_its_answer(store: Store) -> None:
    model = ScriptedModel(
        [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 3, "b": 4}'), say("3 and 7")]
    )
    result = await engine(store, model).start("add", principal=USER)
    assert (result.phase, result.output, result.steps, result.tool_calls) == (
        Phase.DONE,
        "3 and 7",
        3,
        2,
    )
    assert verify(await store.read(result.run_id)) == 8
    events, state, _ = await load_run(store, result.run_id)
    assert state.phase is Phase.DONE
    assert [m.content for m in (await _transcript(store, result.run_id)) if m.role == "tool"] == [
        "3",
        "7",
    ]


async def _transcript(store: Store, run_id: str) -> Sequence[Message]:
    from router.core.transcript import Transcript

    events, _, _ = await load_run(store, run_id)
    return Transcript(events).messages


async def test_a_rejected_call_is_fed_back_and_the_model_corrects_it(store: Store) -> None:
    seen: list[str] = []

    def script(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        step = sum(m.role == "assistant" for m in messages)
        return [call("add", '{"a": 1, "b": "two"}'), call("add", '{"a": 1, "b": 2}'), say("3")][
            step
        ]

    result = await engine(store, ScriptedModel(script)).start("add", principal=USER)
    assert result.phase is Phase.DONE
    assert seen[1] == "error[invalid_arguments] at $.b: Expected `int`, got `str`"
    assert seen[2] == "3"
    assert await kinds(store, result.run_id) == [
        "run_started",
        "model_responded",
        "tool_call_rejected",
        "model_responded",
        "tool_started",
        "tool_succeeded",
        "model_responded",
    ]


async def test_a_denied_call_is_an_event_and_the_tool_never_runs(store: Store) -> None:
    ran: list[str] = []

    @tool(permissions={"admin"})
    async def wipe(target: str) -> str:
        ran.append(target)
        return "wiped"

    result = await engine(store, [call("wipe", '{"target": "db"}'), say("ok")], wipe).start(
        "x", principal=USER
    )
    assert result.phase is Phase.DONE and ran == []
    events = [decode_event(e.payload) for e in await store.read(result.run_id)]
    denied = [e for e in events if type(e).__name__ == "ToolCallDenied"]
    assert len(denied) == 1 and denied[0].missing == ("admin",)  # type: ignore[attr-defined]


# --- limits: each ends the run in its named terminal state ----------------------------


def forever(turn: ModelTurn) -> ScriptedModel:
    return ScriptedModel(lambda messages: turn)


def numbered(messages: Sequence[Message]) -> ModelTurn:
    step = sum(m.role == "assistant" for m in messages)
    return call("add", f'{{"a": {step}, "b": 1}}', usage=Usage(input_tokens=100, output_tokens=10))


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        (Limits(max_steps=4), "max_steps"),
        (Limits(max_tool_calls=3), "max_tool_calls"),
        (Limits(max_input_tokens=250), "max_input_tokens"),
        (Limits(max_output_tokens=25), "max_output_tokens"),
        (Limits(max_total_tokens=300), "max_total_tokens"),
        (Limits(max_cost_usd=0.0003), "max_cost_usd"),
    ],
)
async def test_each_budget_ends_the_run_in_limit_exceeded(
    store: Store, limits: Limits, name: str
) -> None:
    eng = engine(store, ScriptedModel(numbered), prices=PriceTable({"scripted": Price(1.0, 1.0)}))
    result = await eng.start("go", principal=USER, limits=limits)
    assert result.phase is Phase.LIMIT_EXCEEDED
    assert result.reason.startswith(name)
    assert (await kinds(store, result.run_id))[-1] == "limit_exceeded"
    assert result.steps <= limits.max_steps and result.tool_calls <= limits.max_tool_calls


async def test_the_loop_detector_stops_identical_calls(store: Store) -> None:
    result = await engine(store, forever(call("add", '{"a": 1, "b": 1}'))).start(
        "go", principal=USER, limits=Limits(max_repeats=3)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("loop_detected")
    assert result.tool_calls == 2  # the third identical call never ran


async def test_the_loop_detector_sees_the_same_call_written_another_way(store: Store) -> None:
    spellings = ['{"a": 1, "b": 1}', '{ "b" : 1 , "a" : 1 }', '{"a":1,"b":1}', '{"b": 1, "a": 1}']

    def respaced(messages: Sequence[Message]) -> ModelTurn:
        return call("add", spellings[sum(1 for m in messages if m.role == "tool") % 4])

    result = await engine(store, ScriptedModel(respaced)).start(
        "go", principal=USER, limits=Limits(max_repeats=3)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("loop_detected")
    assert result.tool_calls == 2


async def test_endless_invalid_calls_hit_the_rejection_bound(store: Store) -> None:
    def garbage(messages: Sequence[Message]) -> ModelTurn:
        return call("nope", f'{{"n": {len(messages)}}}')

    result = await engine(store, ScriptedModel(garbage)).start(
        "go", principal=USER, limits=Limits(max_rejected_calls=4)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("max_rejected_calls")
    assert result.steps == 5


async def test_the_deadline_on_the_injected_clock(store: Store) -> None:
    clock = ManualClock(0)

    def slow(messages: Sequence[Message]) -> ModelTurn:
        clock.advance(2.0)
        return numbered(messages)

    result = await engine(store, ScriptedModel(slow), clock=clock).start(
        "go", principal=USER, limits=Limits(deadline_s=5.0)
    )
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("deadline")
    assert result.steps == 3


async def test_the_deadline_cuts_a_model_that_never_answers(store: Store) -> None:
    class Hung:
        name = "hung"

        async def respond(self, messages: Any, tools: Any) -> ModelTurn:
            await anyio.sleep_forever()
            raise AssertionError

    from router import SystemClock

    eng = Engine(Runtime(store, clock=SystemClock(), owner="t"), Hung(), Tools([add]))
    result = await eng.start("go", principal=USER, limits=Limits(deadline_s=0.05))
    assert result.phase is Phase.LIMIT_EXCEEDED and result.reason.startswith("deadline")


class Hangs:
    """A model that never answers its first ``hangs`` calls, then answers."""

    name = "hangs"

    def __init__(self, hangs: int) -> None:
        self.hangs, self.calls = hangs, 0

    async def respond(self, messages: Any, tools: Any) -> ModelTurn:
        self.calls += 1
        if self.calls <= self.hangs:
            await anyio.sleep_forever()
        return say("answered")


def test_every_model_call_has_a_timeout_by_default() -> None:
    assert Limits().model_timeout_s == 300.0
    for bad in (0, -1, "5"):
        with pytest.raises(ConfigError, match="model_timeout_s"):
            Limits(model_timeout_s=bad)  # type: ignore[arg-type]


async def test_a_model_that_never_answers_fails_the_run_naming_the_timeout(store: Store) -> None:
    from router import SystemClock

    model = Hangs(hangs=10**6)
    runtime = Runtime(store, clock=SystemClock(), owner="t")
    eng = Engine(runtime, model, Tools([add]), model_retry=Retry(attempts=2, base_delay_s=0))
    result = await eng.start("go", principal=USER, limits=Limits(model_timeout_s=0.05))
    assert result.phase is Phase.FAILED and model.calls == 2
    assert "did not answer within 0.05 s (Limits.model_timeout_s)" in result.reason
    ended = (await load_run(store, result.run_id))[0][-1]
    assert ended.code == "model_timeout"  # type: ignore[union-attr]
    assert runtime.watch.timeouts == 2


async def test_a_model_call_that_times_out_is_retried_like_any_failed_call(store: Store) -> None:
    from router import SystemClock

    model = Hangs(hangs=1)
    eng = Engine(
        Runtime(store, clock=SystemClock(), owner="t"),
        model,
        Tools([add]),
        model_retry=Retry(attempts=3, base_delay_s=0),
    )
    result = await eng.start("go", principal=USER, limits=Limits(model_timeout_s=0.05))
    assert result.phase is Phase.DONE and result.output == "answered" and model.calls == 2


async def test_cancelling_a_run_that_waits_on_its_model_is_a_cancellation_not_a_timeout(
    store: Store,
) -> None:
    from router import SystemClock

    model = Hangs(hangs=1)
    eng = Engine(Runtime(store, clock=SystemClock(), owner="t"), model, Tools([add]))
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: eng.start("go", principal=USER, run_id="r"))
            while model.calls == 0:
                await anyio.sleep(0)
            scope.cancel()
    events = (await load_run(store, "r"))[0]
    assert type(events[-1]).__name__ == "RunCancelled" and model.calls == 1
    assert eng.runtime.watch.timeouts == 0


async def test_a_tool_that_times_out_on_every_attempt_is_a_failed_call_the_model_hears(
    store: Store,
) -> None:
    attempts: list[int] = []

    @tool(timeout_s=0.01, retry=Retry(attempts=2, base_delay_s=0), idempotent=True)
    async def hang() -> str:
        attempts.append(1)
        await anyio.sleep_forever()
        return ""

    seen: list[str] = []

    def model(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        return call("hang", "{}") if len(seen) == 1 else say("it hung")

    result = await engine(store, model, hang).start("go", principal=USER)
    assert result.phase is Phase.DONE and len(attempts) == 2
    assert "timed out" in seen[1] and "0.01 s" in seen[1]  # the timeout it was given
    forever_failing = await engine(store, forever(call("hang", "{}")), hang).start(
        "go", principal=USER, run_id="r2", limits=Limits(max_failures_in_a_row=3, max_repeats=100)
    )
    assert forever_failing.phase is Phase.LIMIT_EXCEEDED
    assert forever_failing.reason.startswith("max_failures_in_a_row: 3")


# --- tools: retries, failures, concurrency --------------------------------------------


async def test_failing_attempts_are_retried_on_the_schedule(store: Store) -> None:
    attempts: list[int] = []

    @tool(retry=Retry(attempts=3, base_delay_s=0), idempotent=True)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    result = await engine(store, [call("flaky", "{}"), say("done")], flaky).start(
        "go", principal=USER
    )
    assert result.phase is Phase.DONE
    events = [decode_event(e.payload) for e in await store.read(result.run_id)]
    assert [
        getattr(e, "attempts", None) for e in events if type(e).__name__ == "ToolSucceeded"
    ] == [3]


async def test_a_tool_failure_is_fed_back_not_raised(store: Store) -> None:
    @tool
    def broken(x: int) -> int:
        raise ValueError(f"bad {x}")

    seen: list[str] = []

    def script(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        return call("broken", '{"x": 1}') if len(seen) == 1 else say("gave up")

    result = await engine(store, ScriptedModel(script), broken).start("go", principal=USER)
    assert result.phase is Phase.DONE
    assert seen[1] == "error[tool_failed]: the tool failed: ValueError: bad 1"


async def test_parallel_calls_run_concurrently_and_record_in_call_order(store: Store) -> None:
    second_done = anyio.Event()
    order: list[str] = []

    @tool(idempotent=True)
    async def first() -> str:
        await (
            second_done.wait()
        )  # finishes only after the second call: completion order is reversed
        order.append("first")
        return "1"

    @tool(idempotent=True)
    async def second() -> str:
        order.append("second")
        second_done.set()
        return "2"

    turn = ModelTurn(
        tool_calls=(ProposedCall("a", "first", "{}"), ProposedCall("b", "second", "{}"))
    )
    result = await engine(store, [turn, say("ok")], first, second).start("go", principal=USER)
    assert result.phase is Phase.DONE and order == ["second", "first"]
    events = [decode_event(e.payload) for e in await store.read(result.run_id)]
    assert [e.call_id for e in events if type(e).__name__ == "ToolSucceeded"] == [
        "a",
        "b",
    ]


async def test_sync_tools_run_off_the_loop_unless_inline(store: Store) -> None:
    import threading

    threads: list[str] = []

    @tool(idempotent=True)
    def blocking() -> int:
        threads.append(threading.current_thread().name)
        return 1

    result = await engine(store, [call("blocking", "{}"), say("ok")], blocking).start(
        "go", principal=USER
    )
    assert result.phase is Phase.DONE
    assert threads and threads[0] != threading.current_thread().name


async def test_a_model_that_keeps_failing_fails_the_run(store: Store) -> None:
    class Down:
        name = "down"

        async def respond(self, messages: Any, tools: Any) -> ModelTurn:
            raise ConnectionError("503")

    eng = Engine(
        Runtime(store, clock=ManualClock(), owner="t"),
        Down(),
        Tools([add]),
        model_retry=Retry(attempts=2, base_delay_s=0),
    )
    result = await eng.start("go", principal=USER)
    assert result.phase is Phase.FAILED and "503" in result.reason


# --- the log: one append per step, byte-equal runs -------------------------------------


async def test_one_store_append_per_step() -> None:
    store = MemoryStore()
    script = [call("add", f'{{"a": {i}, "b": 1}}') for i in range(10)] + [say("done")]
    result = await engine(store, script).start("go", principal=USER)
    assert result.steps == 11
    assert (
        store.appends == result.steps + 1
    )  # + the append of run_started before the first model call


async def test_the_lease_rides_with_the_first_and_last_batch(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        script = [call("add", f'{{"a": {i}, "b": 1}}') for i in range(3)] + [say("done")]
        eng = engine(store, script)
        result = await eng.start("go", principal=USER)
        # one transaction per batch, none for the lease: it is taken with run_started and
        # released with the answer
        assert store.commits == store.appends == result.steps + 1
        await eng.store.acquire_lease(result.run_id, "someone else", 60)  # released: free to take


async def test_a_run_holds_its_lease_from_its_first_batch(store: Store) -> None:
    refused: list[str] = []

    @tool
    async def peek(n: int) -> int:
        try:
            await store.acquire_lease("r", "another engine", 60)
        except LeaseHeld as exc:
            refused.append(exc.owner)
        return n

    result = await engine(store, [call("peek", '{"n": 1}'), say("ok")], peek).start(
        "go", principal=USER, run_id="r"
    )
    assert result.phase is Phase.DONE and refused == ["test"]
    await store.acquire_lease("r", "another engine", 60)  # released with the last batch


async def test_a_side_effecting_step_commits_before_the_tool_runs() -> None:
    store = MemoryStore()
    committed_before: list[list[str]] = []

    @tool
    async def pay(cents: int) -> str:
        committed_before.append([e.kind for e in await store.read("run_1")])
        return "paid"

    result = await engine(store, [call("pay", '{"cents": 5}'), say("ok")], pay).start(
        "go", principal=USER
    )
    assert result.phase is Phase.DONE
    assert committed_before == [["run_started", "model_responded", "tool_started"]]
    assert store.appends == 4  # start, before the tool, after it, the answer


async def test_equal_runs_give_byte_equal_logs(tmp_path: Path) -> None:
    script = [call("add", '{"a": 1, "b": 2}'), call("nope", "{}"), say("3")]
    logs = []
    for name in ("one", "two"):
        async with SqliteStore.open(tmp_path / f"{name}.db") as store:
            result = await engine(store, list(script)).start("go", principal=USER)
            logs.append([(e.seq, e.payload, e.hash) for e in await store.read(result.run_id)])
    assert logs[0] == logs[1]


# --- cancellation ---------------------------------------------------------------------


async def test_cancelling_a_run_records_it_and_leaves_no_task(store: Store) -> None:
    started, cleaned = anyio.Event(), anyio.Event()

    @tool(idempotent=True)
    async def wait() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.set()
        return ""

    eng = engine(store, [call("wait", "{}")], wait)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: eng.start("go", principal=USER, run_id="r"))
        await started.wait()
        tg.cancel_scope.cancel()
    assert cleaned.is_set()
    _, state, _ = await load_run(store, "r")
    assert state.phase is Phase.CANCELLED
    await store.acquire_lease("r", "someone-else", 1)  # the lease was released


# --- resume and decisions ---------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing in router catches it."""


async def test_resume_continues_from_the_log_without_calling_the_model_again(store: Store) -> None:
    script = [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 3, "b": 4}'), say("done")]
    reference = await engine(MemoryStore(), list(script)).start("go", principal=USER)

    crashing_model_calls = 0

    def crash_on_third(messages: Sequence[Message]) -> ModelTurn:
        nonlocal crashing_model_calls
        crashing_model_calls += 1
        if crashing_model_calls == 3:
            raise Crash
        return script[crashing_model_calls - 1]

    with pytest.raises(Crash):
        await engine(store, ScriptedModel(crash_on_third)).start("go", principal=USER, run_id="r")
    await store.release_lease("r", "test")  # a crashed process's lease would expire
    model = ScriptedModel(script)
    result = await engine(store, model).resume("r")
    assert (result.phase, result.output, result.steps, result.usage) == (
        reference.phase,
        reference.output,
        reference.steps,
        reference.usage,
    )
    assert model.calls == 1  # only the step that was never recorded
    assert verify(await store.read("r")) > 0


async def test_a_started_side_effect_without_result_waits_for_a_decision(store: Store) -> None:
    runs: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        runs.append(cents)
        if len(runs) == 1:
            raise Crash  # dies after the effect, before its result is recorded
        return "paid"

    script = [call("pay", '{"cents": 5}'), say("ok")]
    with pytest.raises(Crash):
        await engine(store, script, pay).start("go", principal=USER, run_id="r")
    await store.release_lease("r", "test")
    interrupted = await engine(store, script, pay).resume("r")
    assert interrupted.phase is Phase.INTERRUPTED and interrupted.interrupted == ("call_1_0",)
    assert runs == [5]  # not run again
    again = await engine(store, script, pay).resume("r")
    assert again.phase is Phase.INTERRUPTED  # resuming does not decide for the reviewer

    with pytest.raises(DecisionError):
        await resolve_call(store, "r", "nope", "retry")
    with pytest.raises(DecisionError):
        await resolve_call(store, "r", "call_1_0", "supply", result=object())
    state = await resolve_call(store, "r", "call_1_0", "supply", result="paid", by="ann")
    assert state.phase is Phase.AWAITING_MODEL
    done = await engine(store, script, pay).resume("r")
    assert done.phase is Phase.DONE and runs == [5]
    with pytest.raises(DecisionError, match="not interrupted"):
        await resolve_call(store, "r", "call_1_0", "retry")


@pytest.mark.parametrize(
    ("decision", "phase", "runs"), [("retry", Phase.DONE, [5, 5]), ("fail", Phase.FAILED, [5])]
)
async def test_a_reviewer_may_retry_or_fail_the_call(
    store: Store, decision: Any, phase: Phase, runs: list[int]
) -> None:
    ran: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        ran.append(cents)
        if len(ran) == 1:
            raise Crash
        return "paid"

    script = [call("pay", '{"cents": 5}'), say("ok")]
    with pytest.raises(Crash):
        await engine(store, script, pay).start("go", principal=USER, run_id="r")
    await store.release_lease("r", "test")
    assert (await engine(store, script, pay).resume("r")).phase is Phase.INTERRUPTED
    await resolve_call(store, "r", "call_1_0", decision, by="ann", note="checked the ledger")
    result = await engine(store, script, pay).resume("r")
    assert result.phase is phase and ran == runs


async def test_an_idempotent_call_started_before_a_crash_simply_runs_again(store: Store) -> None:
    ran: list[int] = []

    @tool(idempotent=True)
    async def read(n: int) -> int:
        ran.append(n)
        if len(ran) == 1:
            raise Crash
        return n

    script = [call("read", '{"n": 1}'), say("ok")]
    with pytest.raises(Crash):
        await engine(store, script, read).start("go", principal=USER, run_id="r")
    await store.release_lease("r", "test")
    # nothing of the idempotent step was committed: the model is asked again
    result = await engine(store, script, read).resume("r")
    assert result.phase is Phase.DONE and ran == [1, 1]


async def test_resume_needs_the_lease(store: Store) -> None:
    await store.acquire_lease("r", "other", 60)
    with pytest.raises(LeaseHeld):
        await engine(store, [say("x")]).resume("r")


async def test_resume_of_unknown_finished_or_tampered_runs(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await engine(store, [say("x")]).resume("missing")
    result = await engine(store, [say("x")]).start("go", principal=USER, run_id="r")
    again = await engine(store, [say("y")]).resume("r")
    assert again == result
    if isinstance(store, MemoryStore):  # forge a stored payload (SQLite's triggers refuse this)
        log = store._runs["r"]
        log[1] = type(log[1])(
            **{**{f: getattr(log[1], f) for f in log[1].__struct_fields__}, "payload": b"{}"}
        )
        with pytest.raises(ChainBroken):
            await engine(store, [say("y")]).resume("r")


# --- any model output ends the run within its limits ---------------------------------

turns = st.one_of(
    st.builds(
        lambda a, b: call("add", f'{{"a": {a}, "b": {b}}}'), st.integers(-5, 5), st.integers(-5, 5)
    ),
    st.builds(lambda raw: call("add", raw), st.text(max_size=20)),
    st.builds(lambda raw: call("add", raw), st.binary(max_size=20)),
    st.builds(lambda name: call(name, "{}"), st.text(max_size=10)),
    st.builds(
        lambda n: ModelTurn(
            tool_calls=tuple(ProposedCall("", "add", '{"a": 1, "b": 2}') for _ in range(n))
        ),
        st.integers(0, 4),
    ),
    st.builds(lambda t: say(t), st.text(max_size=10)),
)


@settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(turns, min_size=1, max_size=8), cycle=st.booleans())
async def test_any_model_output_ends_in_a_terminal_state_within_the_limits(
    script: list[ModelTurn], cycle: bool
) -> None:
    limits = Limits(max_steps=6, max_tool_calls=8, max_rejected_calls=3)
    model = ScriptedModel(
        (lambda m: script[sum(x.role == "assistant" for x in m) % len(script)]) if cycle else script
    )
    store = MemoryStore()
    result = await engine(store, model).start("go", principal=USER, limits=limits)
    assert result.phase in (Phase.DONE, Phase.LIMIT_EXCEEDED)
    assert result.steps <= limits.max_steps and result.tool_calls <= limits.max_tool_calls
    stored = await store.read(result.run_id)
    assert verify(stored) == len(stored)
    assert all(
        encode_event(decode_event(s.payload)) == s.payload for s in stored
    )  # canonical round trip
    _, state, _ = await load_run(store, result.run_id)
    assert state.phase is result.phase and not state.fault
    assert (await engine(store, model).replay(result.run_id)).identical


async def test_bad_start_input_is_a_config_error_and_leaves_nothing(store: Store) -> None:
    from router import ConfigError

    eng = engine(store, [say("x")])
    with pytest.raises(ConfigError):
        await eng.start([{"role": "wizard", "content": "hi"}], principal=USER)
    with pytest.raises(ConfigError):
        await eng.start("hi", principal="not a principal")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Limits(max_steps=-1)
    with pytest.raises(ConfigError):
        Limits(loop_window=0)
    assert await store.runs() == []
    ok = await eng.start([{"role": "user", "content": "hi"}], principal={"id": "u"}, run_id="r")  # type: ignore[arg-type]
    assert ok.phase is Phase.DONE
    with pytest.raises(ConfigError, match="already exists"):
        await eng.start("again", principal=USER, run_id="r")


async def test_a_payload_that_is_not_an_event_is_a_store_error() -> None:
    from router import StoreError
    from router.core.chain import link
    from router.core.events import StoredEvent

    store = MemoryStore()
    payload = b'{"kind": "made_up", "at": 1}'
    stored = [StoredEvent("r", 0, "made_up", payload, bytes(32), link("r", 0, payload, bytes(32)))]
    await store.append(stored)
    with pytest.raises(StoreError, match="not an event this router knows"):
        await load_run(store, "r")


async def test_a_payload_holding_two_events_is_named_not_split() -> None:
    from router import StoreError
    from router.core.chain import GENESIS, link
    from router.core.events import StoredEvent

    store = MemoryStore()
    eng = Engine(
        Runtime(store, clock=ManualClock(), ids=SequentialIds()),
        ScriptedModel([ModelTurn(text="done")]),
        Tools([]),
    )
    result = await eng.start("hi", principal=USER)
    good = await store.read(result.run_id)
    assert await load_run(store, result.run_id)  # one decode for the whole log reads it back
    # A forged log whose second payload holds two events, re-chained so that the chain holds.
    first, second = good[0].payload, good[1].payload
    payloads = [first, second + b"," + second]
    forged, head = [], GENESIS
    for seq, (payload, kind) in enumerate(zip(payloads, (good[0].kind, good[1].kind), strict=True)):
        forged.append(
            StoredEvent("forged", seq, kind, payload, head, link("forged", seq, payload, head))
        )
        head = forged[-1].hash
    await store.append(forged)
    with pytest.raises(StoreError, match="event 1 is not an event"):
        await load_run(store, "forged")
    assert [encode_event(e) for e in (await load_run(store, result.run_id))[0]] == [
        s.payload for s in good
    ]


async def test_spending_nothing_is_recorded_one_way_whatever_usage_instance_reports_it() -> None:
    store = MemoryStore()
    zero = Usage(input_tokens=0, output_tokens=0)  # equal to the default, another instance
    script = ScriptedModel(
        [
            ModelTurn(tool_calls=(ProposedCall("c1", "add", '{"a": 1, "b": 2}'),), usage=zero),
            ModelTurn(text="3", usage=zero),
        ]
    )
    result = await engine(store, script).start("add", principal=USER)
    payloads = [e.payload for e in await store.read(result.run_id)]
    assert result.output == "3" and len(payloads) == 5
    assert not any(b'"usage"' in p for p in payloads), payloads
    other = MemoryStore()  # the same run, with no usage reported at all
    again = await engine(other, [call("add", '{"a": 1, "b": 2}', call_id="c1"), say("3")]).start(
        "add", principal=USER
    )
    assert [e.payload for e in await other.read(again.run_id)] == payloads


def _latencies(stored: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """call id -> (its result's latency_us, the time from its tool_started to its result)."""
    events = [decode_event(e.payload) for e in stored]
    started = {e.call_id: e.at for e in events if isinstance(e, ToolStarted)}
    return {
        e.call_id: (e.latency_us, e.at - started[e.call_id])
        for e in events
        if isinstance(e, ToolSucceeded)
    }


async def test_a_tool_latency_is_the_tool_own_time(store: Store) -> None:
    @tool(idempotent=True)
    def threaded(n: int) -> int:
        return n

    # the clock moves 10 µs at every reading: a tool timed alone takes one step of it
    script = [
        call("add", '{"a": 1, "b": 2}', "inline"),
        call("threaded", '{"n": 1}', "thread"),
        say("ok"),
    ]
    result = await engine(store, script, add, threaded).start("go", principal=USER)
    latencies = _latencies(await store.read(result.run_id))
    for call_id in ("inline", "thread"):  # router's own work since tool_started is not the tool's
        latency, since_started = latencies[call_id]
        assert latency == 10 < since_started, call_id


async def test_an_inline_call_run_again_after_a_crash_is_timed_from_the_new_run(
    store: Store,
) -> None:
    ran: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        ran.append(cents)
        raise Crash  # dies after the effect, before its result is recorded

    both = ModelTurn(
        tool_calls=(
            ProposedCall("sum", "add", '{"a": 1, "b": 2}'),
            ProposedCall("pay", "pay", '{"cents": 5}'),
        )
    )
    script = [both, say("ok")]
    with pytest.raises(Crash):
        await engine(store, script, add, pay).start("go", principal=USER, run_id="r")
    await store.release_lease("r", "test")
    assert (await engine(store, script, add, pay).resume("r")).phase is Phase.INTERRUPTED
    await resolve_call(store, "r", "pay", "supply", result="paid")
    later = ManualClock(9_000_000, 10)  # the resume happens long after the call started
    assert (await engine(store, script, add, pay, clock=later).resume("r")).phase is Phase.DONE
    latency, since_started = _latencies(await store.read("r"))["sum"]
    assert latency == 10 and since_started > 7_000_000


# --- results that cannot be recorded, and a process that stops -----------------------------


async def test_a_result_that_contains_itself_or_is_too_large_is_a_failed_call(
    store: Store,
) -> None:
    @tool(idempotent=True, inline=True)
    def loops() -> dict[str, Any]:
        """Return a value that contains itself."""
        value: dict[str, Any] = {}
        value["self"] = value
        return value

    @tool(idempotent=True, inline=True, max_result_bytes=100)
    def huge() -> str:
        """Return more than the cap."""
        return "x" * 1_000

    model = ScriptedModel([call("loops", "{}"), call("huge", "{}"), say("done")])
    result = await engine(store, model, loops, huge).start("go", principal=USER)
    assert result.phase is Phase.DONE
    failed = [e for e in decode_run(await store.read(result.run_id)) if isinstance(e, ToolFailed)]
    assert "cannot be encoded as JSON: it contains itself" in failed[0].error
    assert "1,002 bytes, over the tool's cap of 100" in failed[1].error


async def test_a_tool_that_stops_the_process_is_recorded_before_it_propagates(
    store: Store,
) -> None:
    @tool
    async def quit_now() -> str:
        """Stop the process (not idempotent: its outcome is unknown)."""
        raise SystemExit(3)

    model = ScriptedModel([call("quit_now", "{}"), say("done")])
    with pytest.raises(SystemExit):
        await engine(store, model, quit_now).start("go", principal=USER, run_id="r")
    events = decode_run(await store.read("r"))
    assert isinstance(events[-1], RunInterrupted) and "SystemExit" in events[-1].reason
    resumed = await engine(store, model, quit_now).resume("r")
    assert resumed.phase is Phase.INTERRUPTED and resumed.interrupted == ("call_1_0",)


async def test_a_model_text_over_the_cap_fails_the_run_and_says_why(store: Store) -> None:
    result = await engine(store, forever(say("y" * 5_000)), max_text_bytes=1_000).start(
        "go", principal=USER
    )
    assert result.phase is Phase.FAILED
    assert "5,000 bytes, over the engine's cap of 1,000" in result.reason
    from router import ConfigError

    with pytest.raises(ConfigError, match="max_text_bytes"):
        engine(store, forever(say("y")), max_text_bytes=0)


async def test_a_run_that_never_waits_can_still_be_cancelled(store: Store) -> None:
    # The scripted model and an inline tool never give the event loop a turn; the engine
    # lets it run now and then, so a timeout around the run fires long before its end.
    eng = engine(store, forever(call("add", '{"a": 1, "b": 1}')))
    limits = Limits(max_steps=1_000_000, max_tool_calls=1_000_000, max_repeats=10**9)
    with anyio.move_on_after(0.05) as scope:
        await eng.start("go", principal=USER, run_id="busy", limits=limits)
    assert scope.cancelled_caught
    events = [e.kind for e in await store.read("busy")]
    assert events[-1] == "run_cancelled" and len(events) < 1_000_000


async def test_a_result_that_breaks_the_declared_return_type_is_a_failed_call(
    store: Store,
) -> None:
    @tool(idempotent=True, inline=True)
    def count() -> int:
        """Count, but return the wrong thing."""
        return {"n": 3}  # type: ignore[return-value]

    @tool(
        idempotent=True,
        inline=True,
        returns={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    def tally() -> Any:
        """Tally, with a declared result schema."""
        return {"n": "three"}

    model = ScriptedModel([call("count", "{}"), call("tally", "{}"), say("done")])
    result = await engine(store, model, count, tally).start("go", principal=USER)
    failed = [e for e in decode_run(await store.read(result.run_id)) if isinstance(e, ToolFailed)]
    assert "declared return type: Expected `int`, got `dict`" in failed[0].error
    assert "declared return type" in failed[1].error and "$.n" in failed[1].error
