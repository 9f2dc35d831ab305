"""The transition table, exhaustively, and the fold, by property."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.effects import (
    AwaitDecision,
    CallModel,
    DecideCalls,
    Finish,
    Idle,
    Record,
    RunTools,
    next_effect,
    resume_events,
    transition,
)
from router.core.events import (
    EVENT_TYPES,
    ContextSummarized,
    Event,
    GraphStarted,
    Kind,
    LimitExceeded,
    Limits,
    MemoryRecalled,
    Message,
    ModelResponded,
    ModelRouted,
    NodeFailed,
    NodeFinished,
    Principal,
    ReviewDecided,
    ReviewRequested,
    RouteAttempt,
    RunCancelled,
    RunFailed,
    RunForked,
    RunInterrupted,
    RunMigrated,
    RunParked,
    RunResumed,
    RunStarted,
    StepRouted,
    Task,
    ToolCall,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    Usage,
    kind_of,
)
from router.core.fsm import TABLE, TERMINAL, Phase, RunState, fold, mermaid

START = RunStarted(
    at=0,
    messages=(Message(role="user", content="hi"),),
    principal=Principal(id="u"),
    limits=Limits(),
    model="m",
)


def calls(*ids: str) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(id=i, name="t", arguments=f'{{"n": "{i}"}}') for i in ids)


def started(call_id: str, idempotent: bool = True) -> ToolStarted:
    return ToolStarted(at=2, call_id=call_id, tool="t", arguments="{}", idempotent=idempotent)


PREFIXES: dict[Phase, list[Event]] = {
    Phase.NEW: [],
    Phase.AWAITING_MODEL: [START],
    Phase.RUNNING_TOOLS: [
        START,
        ModelResponded(at=1, step=1, tool_calls=calls("c1", "c2", "c3")),
        started("c1"),
    ],
    Phase.INTERRUPTED: [
        START,
        ModelResponded(at=1, step=1, tool_calls=calls("c1", "c2")),
        started("c1", idempotent=False),
        started("c2"),
        RunInterrupted(at=3, call_ids=("c1",), reason="crash"),
    ],
    Phase.AWAITING_REVIEW: [
        START,
        ModelResponded(at=1, step=1, tool_calls=calls("c1", "c2")),
        ReviewRequested(at=2, rule="before_tool", call_ids=("c1",), reason="needs approval"),
    ],
    Phase.FINAL_ANSWER: [
        msgspec.structs.replace(START, limits=Limits(final_answer=True)),
        LimitExceeded(at=1, limit="max_steps", value=49, ceiling=50),
    ],
    Phase.DONE: [START, ModelResponded(at=1, step=1, text="bye")],
    Phase.FAILED: [START, RunFailed(at=1, code="x", reason="y")],
    Phase.LIMIT_EXCEEDED: [START, LimitExceeded(at=1, limit="max_steps", value=2, ceiling=1)],
    Phase.CANCELLED: [START, RunCancelled(at=1)],
}

SAMPLES: dict[Kind, Event] = {
    Kind.RUN_STARTED: START,
    Kind.MODEL_ROUTED: ModelRouted(
        at=5,
        step=1,
        chosen="b",
        attempts=(
            RouteAttempt(model="a", reason="fallback 1 of 2", outcome="failed", detail="down"),
            RouteAttempt(model="b", reason="fallback 2 of 2", outcome="answered"),
        ),
    ),
    Kind.MODEL_RESPONDED: ModelResponded(at=5, step=1, tool_calls=calls("c9")),
    Kind.CONTEXT_SUMMARIZED: ContextSummarized(
        at=5, step=1, replaced=4, text="so far", first_seq=1, last_seq=6
    ),
    Kind.MEMORY_RECALLED: MemoryRecalled(at=5, step=1, namespace="u", query="q"),
    Kind.TOOL_CALL_REJECTED: ToolCallRejected(
        at=5, call_id="c2", tool="t", code="invalid_arguments", reason="r"
    ),
    Kind.TOOL_CALL_DENIED: ToolCallDenied(
        at=5, call_id="c2", tool="t", principal="u", missing=("p",)
    ),
    Kind.TOOL_STARTED: started("c2"),
    Kind.TOOL_SUCCEEDED: ToolSucceeded(at=5, call_id="c1", tool="t", result="1"),
    Kind.TOOL_FAILED: ToolFailed(at=5, call_id="c1", tool="t", error="boom"),
    Kind.RUN_RESUMED: RunResumed(at=5, owner="o"),
    Kind.RUN_PARKED: RunParked(at=5, reason="r", owner="o", attempts=3),
    Kind.RUN_MIGRATED: RunMigrated(at=5, migration="m", from_definition="", to_definition="d2"),
    Kind.RUN_FORKED: RunForked(at=5, parent_run_id="p", parent_seq=3, parent_hash="00"),
    Kind.REVIEW_REQUESTED: ReviewRequested(at=5, rule="before_tool", call_ids=("c2",), reason="r"),
    Kind.REVIEW_DECIDED: ReviewDecided(
        at=5, decision="approve", rule="before_tool", call_ids=("c1",)
    ),
    # graph events belong to graph runs (router.graph): never in an agent run's table
    Kind.GRAPH_STARTED: GraphStarted(
        at=5,
        graph="g",
        definition="d",
        state="{}",
        principal=Principal(id="u"),
        limits=Limits(),
        first=(Task("a"),),
    ),
    Kind.NODE_FINISHED: NodeFinished(at=5, step=0, node="a", update="{}"),
    Kind.NODE_FAILED: NodeFailed(at=5, step=0, node="a", error="e"),
    Kind.STEP_ROUTED: StepRouted(at=5, step=0, next=()),
    Kind.RUN_INTERRUPTED: RunInterrupted(at=5, call_ids=("c1",), reason="crash"),
    Kind.TOOL_CALL_RESOLVED: ToolCallResolved(at=5, call_id="c1", decision="supply", result="1"),
    Kind.LIMIT_EXCEEDED: LimitExceeded(at=5, limit="deadline", value=2, ceiling=1),
    Kind.RUN_FAILED: RunFailed(at=5, code="x", reason="y"),
    Kind.RUN_CANCELLED: RunCancelled(at=5, reason="stop"),
}


def test_every_event_type_has_a_kind_and_a_sample() -> None:
    assert {kind_of(SAMPLES[k]) for k in Kind} == set(Kind)
    assert len(EVENT_TYPES) == len(Kind)


def test_each_prefix_reaches_its_phase() -> None:
    for phase, prefix in PREFIXES.items():
        state = fold(prefix)
        assert (state.phase, state.fault) == (phase, "")


# Where one sample cannot fit every phase the table allows, the phase gets its own.
SAMPLES_IN = {
    (Phase.AWAITING_MODEL, Kind.REVIEW_REQUESTED): ReviewRequested(
        at=5, rule="cost", reason="over budget"
    ),
}


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("kind", list(Kind))
def test_every_phase_and_event_kind_pair(phase: Phase, kind: Kind) -> None:
    state = fold(PREFIXES[phase])
    new, effects = transition(state, SAMPLES_IN.get((phase, kind), SAMPLES[kind]))
    assert len(effects) == 1
    if (phase, kind) in TABLE:
        assert new.fault == ""
        assert new.phase in TABLE[(phase, kind)][1]
        return
    assert new.fault.startswith(f"{kind} in phase {phase}")
    if phase in TERMINAL:
        assert new.phase is phase
        assert effects[0] == Finish(phase)
    elif phase is Phase.NEW:
        assert effects[0] == Idle()
    else:
        (effect,) = effects
        assert isinstance(effect, Record) and isinstance(effect.event, RunFailed)
        assert effect.event.code == "invalid_transition"
        assert fold([effect.event], new).phase is Phase.FAILED


def test_a_tool_event_for_an_unknown_call_is_a_fault_not_an_exception() -> None:
    state = fold(PREFIXES[Phase.RUNNING_TOOLS])
    for event in (
        ToolSucceeded(at=5, call_id="nope", tool="t", result="1"),
        started("c1"),  # already started
        ToolCallRejected(at=5, call_id="c1", tool="t", code="unknown_tool", reason="r"),
    ):
        assert (
            "no proposed call" in transition(state, event)[0].fault
            or "no started" in transition(state, event)[0].fault
        )


def test_effects_follow_the_phase() -> None:
    assert next_effect(fold(PREFIXES[Phase.AWAITING_MODEL])) == CallModel()
    running = fold(PREFIXES[Phase.RUNNING_TOOLS])
    assert next_effect(running) == DecideCalls(calls("c2", "c3"))
    decided = fold(
        [
            ToolCallRejected(at=3, call_id="c2", tool="t", code="oversized", reason="r"),
            started("c3"),
        ],
        running,
    )
    effect = next_effect(decided)
    assert isinstance(effect, RunTools) and [c.call_id for c in effect.calls] == ["c1", "c3"]
    assert next_effect(fold(PREFIXES[Phase.INTERRUPTED])) == AwaitDecision(("c1",))


def test_a_turn_ends_when_every_call_has_an_outcome() -> None:
    state = fold(PREFIXES[Phase.RUNNING_TOOLS])
    state = fold(
        [
            ToolSucceeded(at=3, call_id="c1", tool="t", result="1"),
            ToolCallDenied(at=3, call_id="c2", tool="t", principal="u", missing=("p",)),
        ],
        state,
    )
    assert state.phase is Phase.RUNNING_TOOLS
    state = fold(
        [ToolCallRejected(at=3, call_id="c3", tool="t", code="unknown_tool", reason="r")], state
    )
    assert state.phase is Phase.AWAITING_MODEL
    assert (state.rejected, state.tool_calls) == (2, 1)


def test_decisions_on_interrupted_calls() -> None:
    interrupted = fold(PREFIXES[Phase.INTERRUPTED])
    retry = fold([ToolCallResolved(at=4, call_id="c1", decision="retry")], interrupted)
    assert retry.phase is Phase.RUNNING_TOOLS
    assert next_effect(retry) == DecideCalls(calls("c1"))
    supplied = fold(
        [ToolCallResolved(at=4, call_id="c1", decision="supply", result="7")], interrupted
    )
    assert isinstance(next_effect(supplied), RunTools)  # c2 (idempotent) still runs
    failed = fold(
        [ToolCallResolved(at=4, call_id="c1", decision="fail", by="ann", note="unsure")],
        interrupted,
    )
    assert failed.phase is Phase.FAILED and "ann" in failed.reason


def test_resume_interrupts_only_for_calls_that_are_not_idempotent() -> None:
    both = fold(
        [
            START,
            ModelResponded(at=1, step=1, tool_calls=calls("a", "b")),
            started("a"),
            started("b", False),
        ]
    )
    events = resume_events(both, 9, "me")
    assert [kind_of(e) for e in events] == ["run_resumed", "run_interrupted"]
    assert isinstance(events[1], RunInterrupted) and events[1].call_ids == ("b",)
    safe = fold([START, ModelResponded(at=1, step=1, tool_calls=calls("a")), started("a")])
    assert [kind_of(e) for e in resume_events(safe, 9, "me")] == ["run_resumed"]


def test_limits_gate_the_next_effect() -> None:
    limits = Limits(max_steps=1, max_total_tokens=100, max_cost_usd=0.001, deadline_s=1.0)
    start = RunStarted(at=0, messages=(), principal=Principal(id="u"), limits=limits, model="m")

    def limit_after(*events: Event) -> str:
        effect = next_effect(fold([start, *events]))
        assert isinstance(effect, Record) and isinstance(effect.event, LimitExceeded)
        return effect.event.limit

    turn = ModelResponded(at=1, step=1, tool_calls=calls("a"))
    assert (
        limit_after(turn, started("a"), ToolSucceeded(at=2, call_id="a", tool="t", result="1"))
        == "max_steps"
    )
    assert (
        limit_after(
            ModelResponded(at=1, step=1, tool_calls=calls("a"), usage=Usage(input_tokens=101))
        )
        == "max_total_tokens"
    )
    assert (
        limit_after(ModelResponded(at=1, step=1, tool_calls=calls("a"), cost_nusd=1_000_001))
        == "max_cost_usd"
    )
    assert limit_after(ModelResponded(at=1_000_001, step=1, tool_calls=calls("a"))) == "deadline"


def test_mermaid_lists_every_table_entry() -> None:
    text = mermaid()
    assert text.startswith("stateDiagram-v2")
    for (phase, kind), (_, targets) in TABLE.items():
        for target in targets:
            assert f"{phase.value} --> {target.value}: {kind.value}" in text


# --- properties of the fold ---------------------------------------------------------

ids = st.sampled_from(["c1", "c2", "c3"])
events_strategy = st.lists(
    st.one_of(
        st.just(START),
        st.builds(
            lambda cs, t: ModelResponded(at=1, step=1, tool_calls=calls(*cs), text=t),
            st.lists(ids, max_size=3, unique=True),
            st.text(max_size=5),
        ),
        st.builds(
            lambda c: ToolCallRejected(at=2, call_id=c, tool="t", code="unknown_tool", reason="r"),
            ids,
        ),
        st.builds(
            lambda c: ToolCallDenied(at=2, call_id=c, tool="t", principal="u", missing=("p",)), ids
        ),
        st.builds(lambda c, i: started(c, i), ids, st.booleans()),
        st.builds(lambda c: ToolSucceeded(at=3, call_id=c, tool="t", result="1"), ids),
        st.builds(
            lambda c, t: ToolFailed(at=3, call_id=c, tool="t", error="e", timed_out=t),
            ids,
            st.booleans(),
        ),
        st.builds(lambda c: RunInterrupted(at=3, call_ids=(c,), reason="r"), ids),
        st.builds(
            lambda c, d: ToolCallResolved(at=4, call_id=c, decision=d, result="1"),
            ids,
            st.sampled_from(["retry", "supply", "fail"]),
        ),
        st.just(RunResumed(at=4, owner="o")),
        st.just(RunCancelled(at=5)),
    ),
    max_size=25,
)


@settings(deadline=None, max_examples=300)
@given(events_strategy)
def test_fold_is_total_and_deterministic(events: list[Event]) -> None:
    state = fold(events)
    assert fold(events) == state
    assert isinstance(
        next_effect(state),
        Idle | CallModel | DecideCalls | RunTools | Record | AwaitDecision | Finish,
    )


@settings(deadline=None, max_examples=300)
@given(events_strategy, st.integers(min_value=0, max_value=25))
def test_fold_composes(events: list[Event], cut: int) -> None:
    assert fold(events[cut:], fold(events[:cut])) == fold(events)


@settings(deadline=None, max_examples=200)
@given(events_strategy)
def test_a_terminal_state_never_leaves(events: list[Event]) -> None:
    state = RunState()
    for event in events:
        before = state
        state = fold([event], state)
        if before.terminal:
            assert state.phase is before.phase
