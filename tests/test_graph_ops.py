"""Graph runs get every operation agent runs have: a transition table tested over every
(phase, event kind) pair, fork, migration on resume, replay, the report, show, the CLI's
replay, review and lease renewal on the injected clock, all on real SQLite files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from graph_factory import REVIEW_BEFORE, refund, refund_engine
from hypothesis import given, settings
from hypothesis import strategies as st

import router.cli
from router import (
    ConfigError,
    DecisionError,
    DefinitionChanged,
    Engine,
    GraphEngine,
    ManualClock,
    Principal,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    fork_run,
    review_graph_run,
    verify,
)
from router.core.effects import AwaitReview, Idle, Record
from router.core.events import (
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
    kind_of,
)
from router.core.graph_fsm import (
    GRAPH_TABLE,
    GraphPhase,
    GraphState,
    RouteStep,
    RunStep,
    Stop,
    apply_graph,
    fold_graph,
    graph_mermaid,
    next_graph_effect,
)
from router.graph import END, Graph, add, append
from router.models.scripted import say
from router.run.log import open_log

USER = Principal(id="u")

# --- the transition table, exhaustively ------------------------------------------------

GS = GraphStarted(
    at=0,
    graph="g",
    definition="d",
    state="{}",
    principal=USER,
    limits=Limits(),
    first=(Task("a"), Task("b")),
)
A_DONE = NodeFinished(at=1, step=0, node="a", update='{"x": 1}')
B_DONE = NodeFinished(at=1, step=0, node="b", update='{"y": 2}')

PREFIXES: dict[GraphPhase, list[Event]] = {
    GraphPhase.NEW: [],
    GraphPhase.RUNNING: [GS, A_DONE],  # b has no result yet
    GraphPhase.AWAITING_REVIEW: [
        GS,
        ReviewRequested(at=1, rule="before_node", call_ids=("a",), reason="r"),
    ],
    GraphPhase.DONE: [GS, A_DONE, B_DONE, StepRouted(at=2, step=0, next=())],
    GraphPhase.FAILED: [GS, RunFailed(at=1, code="x", reason="y")],
    GraphPhase.LIMIT_EXCEEDED: [GS, LimitExceeded(at=1, limit="max_steps", value=1, ceiling=1)],
    GraphPhase.CANCELLED: [GS, RunCancelled(at=1, reason="stop")],
}

SAMPLES: dict[Kind, Event] = {
    Kind.RUN_RESUMED: RunResumed(at=5, owner="o"),
    Kind.RUN_PARKED: RunParked(at=5, reason="r", owner="o", attempts=3),
    Kind.RUN_FORKED: RunForked(at=5, parent_run_id="p", parent_seq=2, parent_hash="00"),
    Kind.RUN_MIGRATED: RunMigrated(at=5, migration="m", from_definition="d", to_definition="d2"),
    Kind.REVIEW_REQUESTED: ReviewRequested(at=5, rule="after_node", call_ids=("a",), reason="r"),
    Kind.REVIEW_DECIDED: ReviewDecided(
        at=5, decision="approve", rule="before_node", call_ids=("a",)
    ),
    Kind.GRAPH_STARTED: GS,
    Kind.NODE_FINISHED: NodeFinished(at=5, step=0, node="b", update='{"y": 2}'),
    Kind.NODE_FAILED: NodeFailed(at=5, step=0, node="b", error="e"),
    Kind.STEP_ROUTED: StepRouted(at=5, step=0, next=(Task("c"),)),
    Kind.LIMIT_EXCEEDED: LimitExceeded(at=5, limit="deadline", value=2, ceiling=1),
    Kind.RUN_FAILED: RunFailed(at=5, code="x", reason="y"),
    Kind.RUN_CANCELLED: RunCancelled(at=5, reason="stop"),
}


# The agent loop's events never belong to a graph run.
CALL = ToolCall(id="c1", name="t", arguments="{}")
AGENT_SAMPLES: dict[Kind, Event] = {
    Kind.RUN_STARTED: RunStarted(
        at=5,
        messages=(Message(role="user", content="hi"),),
        principal=USER,
        limits=Limits(),
        model="m",
    ),
    Kind.MODEL_ROUTED: ModelRouted(
        at=5,
        step=1,
        chosen="m",
        attempts=(RouteAttempt(model="m", reason="first", outcome="answered"),),
    ),
    Kind.MODEL_RESPONDED: ModelResponded(at=5, step=1, tool_calls=(CALL,)),
    Kind.CONTEXT_SUMMARIZED: ContextSummarized(
        at=5, step=1, replaced=4, text="so far", first_seq=1, last_seq=6
    ),
    Kind.MEMORY_RECALLED: MemoryRecalled(at=5, step=1, namespace="u", query="q"),
    Kind.TOOL_CALL_REJECTED: ToolCallRejected(
        at=5, call_id="c1", tool="t", code="unknown_tool", reason="r"
    ),
    Kind.TOOL_CALL_DENIED: ToolCallDenied(
        at=5, call_id="c1", tool="t", principal="u", missing=("p",)
    ),
    Kind.TOOL_STARTED: ToolStarted(at=5, call_id="c1", tool="t", arguments="{}", idempotent=True),
    Kind.TOOL_SUCCEEDED: ToolSucceeded(at=5, call_id="c1", tool="t", result="1"),
    Kind.TOOL_FAILED: ToolFailed(at=5, call_id="c1", tool="t", error="boom"),
    Kind.RUN_INTERRUPTED: RunInterrupted(at=5, call_ids=("c1",), reason="crash"),
    Kind.TOOL_CALL_RESOLVED: ToolCallResolved(at=5, call_id="c1", decision="supply", result="1"),
}
SAMPLES.update(AGENT_SAMPLES)

# Where the phase's prefix cannot take the table's sample, the pair gets its own prefix.
PREFIXES_FOR: dict[tuple[GraphPhase, Kind], list[Event]] = {
    (GraphPhase.RUNNING, Kind.STEP_ROUTED): [GS, A_DONE, B_DONE],
}


def test_every_event_kind_has_a_sample_and_each_prefix_reaches_its_phase() -> None:
    assert {kind_of(SAMPLES[k]) for k in Kind} == set(Kind)
    for phase, prefix in PREFIXES.items():
        state = fold_graph(None, prefix)
        assert (state.phase, state.fault) == (phase, "")
    for (phase, _), prefix in PREFIXES_FOR.items():
        assert fold_graph(None, prefix).phase is phase


@pytest.mark.parametrize("phase", list(GraphPhase))
@pytest.mark.parametrize("kind", list(Kind))
def test_every_graph_phase_and_event_kind_pair(phase: GraphPhase, kind: Kind) -> None:
    state = fold_graph(None, PREFIXES_FOR.get((phase, kind), PREFIXES[phase]))
    new = apply_graph(None, state, SAMPLES[kind])
    effect = next_graph_effect(new, frozenset({"a"}), frozenset({"a"}))
    if (phase, kind) in GRAPH_TABLE:
        assert new.fault == ""
        assert new.phase in GRAPH_TABLE[(phase, kind)][1]
        return
    assert new.fault.startswith(f"{kind} in phase {phase}")
    assert new.phase is phase
    if new.terminal:
        assert effect == Stop(phase)
    elif phase is GraphPhase.NEW:
        assert effect == Idle()  # nothing started: nothing to record a failure in
    else:
        assert isinstance(effect, Record) and isinstance(effect.event, RunFailed)
        assert effect.event.code == "invalid_transition"
        assert apply_graph(None, new, effect.event).phase is GraphPhase.FAILED


def test_node_results_and_routing_that_do_not_fit_the_step_are_faults() -> None:
    running = fold_graph(None, [GS, A_DONE])
    for event, why in [
        (NodeFinished(at=5, step=0, node="c", update="{}"), "not a task"),
        (NodeFinished(at=5, step=0, node="a", update="{}"), "already"),  # a has its result
        (NodeFinished(at=5, step=3, node="b", update="{}"), "step"),
        (StepRouted(at=5, step=0, next=()), "before every task"),  # b has no result yet
        (
            RunMigrated(at=5, migration="m", from_definition="other", to_definition="d2"),
            "not under",
        ),
    ]:
        new = apply_graph(None, running, event)
        assert why in new.fault, (event, new.fault)
        effect = next_graph_effect(new)
        assert isinstance(effect, Record) and isinstance(effect.event, RunFailed)
    both = fold_graph(None, [GS, A_DONE, B_DONE])
    assert "step" in apply_graph(None, both, StepRouted(at=5, step=4, next=())).fault
    assert (
        fold_graph(None, [GS, A_DONE, B_DONE, StepRouted(at=5, step=0, next=())]).phase
        is GraphPhase.DONE
    )
    empty = apply_graph(
        None,
        GraphState(),
        GraphStarted(
            at=0, graph="g", definition="d", state="{}", principal=USER, limits=Limits(), first=()
        ),
    )
    # A start with no tasks would have the driver run empty steps forever: a fault instead.
    assert empty.fault and next_graph_effect(empty) == Idle()


def test_a_step_cut_short_runs_only_its_tasks_without_a_result() -> None:
    assert next_graph_effect(fold_graph(None, [GS])) == RunStep((Task("a"), Task("b")))
    assert next_graph_effect(fold_graph(None, [GS, A_DONE])) == RunStep((Task("b"),))
    assert next_graph_effect(fold_graph(None, [GS, B_DONE, A_DONE])) == RouteStep()
    failed = next_graph_effect(
        fold_graph(None, [GS, NodeFailed(at=1, step=0, node="a", error="e")])
    )
    assert isinstance(failed, Record) and isinstance(failed.event, RunFailed)
    assert failed.event.code == "node_failed"


def test_graph_mermaid_lists_every_table_entry() -> None:
    text = graph_mermaid()
    assert text.startswith("stateDiagram-v2")
    for (phase, kind), (_, targets) in GRAPH_TABLE.items():
        for target in targets:
            assert f"{phase.value} --> {target.value}: {kind.value}" in text


# --- properties of the fold ---------------------------------------------------------

nodes = st.sampled_from(["a", "b", "c"])
updates = st.sampled_from(['{"x": 1}', '{"n": 2}', '{"n": "two"}', "[]", "not json", "{}"])
tasks = st.lists(st.builds(Task, nodes), max_size=3, unique=True).map(tuple)
graph_events = st.lists(
    st.one_of(
        st.builds(
            lambda first, state: GraphStarted(
                at=0,
                graph="g",
                definition="d",
                state=state,
                principal=USER,
                limits=Limits(max_steps=3),
                first=first,
            ),
            tasks,
            st.sampled_from(["{}", '{"n": 1}', "nope"]),
        ),
        st.builds(
            lambda node, step, update: NodeFinished(at=1, step=step, node=node, update=update),
            nodes,
            st.integers(0, 3),
            updates,
        ),
        st.builds(
            lambda node, step: NodeFailed(at=1, step=step, node=node, error="e"),
            nodes,
            st.integers(0, 3),
        ),
        st.builds(
            lambda step, nxt: StepRouted(at=2, step=step, next=nxt), st.integers(0, 3), tasks
        ),
        st.builds(
            lambda rule: ReviewRequested(at=2, rule=rule, reason="r"),
            st.sampled_from(["before_node", "after_node"]),
        ),
        st.builds(
            lambda d: ReviewDecided(at=3, decision=d, rule="before_node"),
            st.sampled_from(["approve", "reject"]),
        ),
        st.builds(
            lambda frm: RunMigrated(at=3, migration="m", from_definition=frm, to_definition="d2"),
            st.sampled_from(["d", "d2", "x"]),
        ),
        st.just(RunResumed(at=4, owner="o")),
        st.just(RunForked(at=4, parent_run_id="p", parent_seq=1, parent_hash="00")),
        st.just(LimitExceeded(at=5, limit="max_steps", value=3, ceiling=3)),
        st.just(RunFailed(at=5, code="x", reason="y")),
        st.just(RunCancelled(at=5)),
        st.sampled_from(list(AGENT_SAMPLES.values())),
    ),
    max_size=25,
)


async def _noop(state: dict[str, Any]) -> dict[str, Any]:
    return {}


def _summing() -> Any:
    """The merge of a graph whose reducers raise on some updates (a number plus a string)."""
    g = Graph("sum", reducers={"n": add, "x": append})
    for name in ("a", "b", "c"):
        g.add_node(name, _noop)
    g.start("a")
    g.fanout("a", ["b", "c"], then="a")
    return g.compile().merge


MERGES = [None, refund().merge, _summing()]


@settings(deadline=None, max_examples=300)
@given(graph_events, st.integers(0, len(MERGES) - 1))
def test_fold_graph_is_total_and_deterministic(events: list[Event], merge: int) -> None:
    state = fold_graph(MERGES[merge], events)
    assert fold_graph(MERGES[merge], events) == state
    effect = next_graph_effect(state, frozenset({"a"}), frozenset({"b"}))
    assert isinstance(effect, Idle | RunStep | RouteStep | Record | AwaitReview | Stop)


@settings(deadline=None, max_examples=300)
@given(graph_events, st.integers(0, len(MERGES) - 1))
def test_a_terminal_graph_state_never_leaves(events: list[Event], merge: int) -> None:
    state = GraphState()
    for event in events:
        before = state
        state = apply_graph(MERGES[merge], state, event)
        if before.terminal:
            assert state.phase is before.phase


# --- the acceptance scenario, end to end -------------------------------------------------


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``router ...`` in-process (on its own event loop, in a worker thread); its exit code and
    stdout."""
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(router.cli.main, list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.anyio
async def test_a_graph_run_stops_forks_migrates_finishes_and_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"
    async with SqliteStore.open(db) as store:
        runtime = Runtime(store, clock=ManualClock(1_000_000, 1000), owner="w")
        engine = GraphEngine(runtime, refund(), review_before=REVIEW_BEFORE)
        # The route picks pay, which waits for a reviewer, or deny.
        small = await engine.start({"asked": 120}, principal=USER, run_id="small")
        assert small.phase == "awaiting_review" and "paid" not in small.state
        big = await engine.start({"asked": 900}, principal=USER, run_id="big")
        assert big.phase == "done" and big.state["paid"] == 0

    code, out = await cli(capsys, "approve", "small", "--db", str(db), "--by", "ann")
    assert code == 0 and "before_node" in out, out

    async with SqliteStore.open(db) as store:
        runtime = Runtime(store, clock=ManualClock(9_000_000, 1000), owner="w")
        parent = await store.read("small")
        at = len(parent)  # after the approval
        fork = await fork_run(runtime, "small", at, new_run_id="fork")
        assert isinstance(fork, GraphState) and fork.phase is GraphPhase.RUNNING
        forked = await store.read("fork")
        assert [(s.kind, s.payload) for s in forked[:at]] == [(s.kind, s.payload) for s in parent]
        assert forked[at].kind == "run_forked" and len(forked) == at + 1
        events, _ = await open_log(runtime, "fork", lease=False)
        assert isinstance(events[at], RunForked) and events[at].parent_hash == parent[-1].hash.hex()
        assert verify(forked) == len(forked)

        engine = GraphEngine(runtime, refund(), review_before=REVIEW_BEFORE)
        extended = GraphEngine(runtime, refund(extra=True), review_before=REVIEW_BEFORE)
        with pytest.raises(DefinitionChanged) as refused:
            await extended.resume("fork")
        assert refused.value.changed == ("graph", "node:extra")
        assert len(await store.read("fork")) == at + 1  # refused: nothing written, lease given back
        done = await extended.resume("fork", migration="add-extra")
        assert done.phase == "done" and done.state == {
            "asked": 120,
            "amount": 120,
            "paid": 120,
            "notified": "paid 120",
        }
        kinds = [s.kind for s in await store.read("fork")]
        assert (
            kinds[at : at + 3] == ["run_forked", "run_migrated", "run_resumed"]
            and kinds[-1] == "step_routed"
        )
        assert (await extended.replay("fork")).identical

        finished = await engine.resume("small")  # the parent goes on under its own graph
        assert finished.phase == "done" and "notified" not in finished.state
        assert (await engine.replay("small")).identical
        assert not (await extended.replay("small")).identical  # its pay led to END, not to extra

    code, out = await cli(capsys, "report", "--db", str(db))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.split("\n\n")[0].splitlines()[2:]}
    assert {run: row[2] for run, row in rows.items()} == {
        "small": "done",
        "big": "done",
        "fork": "done",
    }
    assert "unfinished" not in out

    code, out = await cli(capsys, "show", "fork", "--db", str(db))
    assert code == 0 and out.startswith("run fork   graph refund")
    assert "forked" in out and "migrated      add-extra" in out
    assert out.rstrip().splitlines()[-1].startswith("=> done")

    code, out = await cli(
        capsys, "replay", "fork", "--db", str(db), "--agent", "graph_factory:extended_engine"
    )
    assert code == 0 and "fork: identical" in out, out
    code, out = await cli(
        capsys, "replay", "small", "--db", str(db), "--agent", "graph_factory:refund_engine"
    )
    assert code == 0 and "small: identical" in out, out
    code, out = await cli(capsys, "replay", "fork", "--db", str(db), "--agent", "demo")
    assert code == 1 and "graph run" in out and "DIVERGES" not in out, out

    code, out = await cli(capsys, "fork", "big", "2", "--new", "big-2", "--db", str(db))
    assert code == 0 and "big-2" in out and "running" in out, out
    code, out = await cli(capsys, "fsm", "--graph")
    assert code == 0 and out.strip() == graph_mermaid()


@pytest.mark.anyio
async def test_a_fork_in_the_middle_of_a_step_runs_the_rest_of_the_step(tmp_path: Path) -> None:
    ran: list[str] = []

    def branch(name: str) -> Any:
        async def run(state: dict[str, Any]) -> dict[str, Any]:
            ran.append(name)
            return {"notes": [name]}

        return run

    g = Graph("fan", reducers={"notes": append})
    g.add_node("start", branch("start"))
    for name in ("b1", "b2", "b3"):
        g.add_node(name, branch(name))
    g.add_node("join", branch("join"))
    g.start("start")
    g.fanout("start", ["b1", "b2", "b3"], then="join")
    g.edge("join", END)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = GraphEngine(Runtime(store, clock=ManualClock(0, 10)), g.compile())
        parent = await engine.start({}, principal=USER, run_id="p")
        assert parent.state["notes"] == ["start", "b1", "b2", "b3", "join"]
        kinds = [s.kind for s in await store.read("p")]
        after_b1 = kinds.index("node_finished", kinds.index("step_routed")) + 1  # before b2's
        await fork_run(store, "p", after_b1, new_run_id="f")
        ran.clear()
        result = await engine.resume("f")
        assert ran == ["b2", "b3", "join"]  # b1's result is in the log: it does not run again
        assert result.phase == "done" and result.state == parent.state
        assert (await engine.replay("f")).identical


# --- code changes are named ------------------------------------------------------------


async def pay_twice(state: dict[str, Any]) -> dict[str, Any]:
    return {"paid": state["amount"] * 2}


def decide_otherwise(state: dict[str, Any]) -> str:
    return "deny" if state["amount"] > 100 else "pay"


@pytest.mark.anyio
async def test_a_changed_node_or_route_is_named_when_resuming(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        waiting = await refund_engine(store).start({"asked": 50}, principal=USER, run_id="r")
        assert waiting.phase == "awaiting_review"
        before = len(await store.read("r"))
        for graph, changed in [
            (refund(pay_fn=pay_twice), ("node:pay",)),
            (refund(decide_fn=decide_otherwise), ("route:draft",)),
        ]:
            assert graph.parts["graph"] == refund().parts["graph"]  # the same shape
            with pytest.raises(DefinitionChanged) as refused:
                await GraphEngine(store, graph, review_before=REVIEW_BEFORE).resume("r")
            assert refused.value.changed == changed and changed[0] in str(refused.value)
        assert len(await store.read("r")) == before
        unchanged = await refund_engine(store).resume("r")
        assert unchanged.phase == "awaiting_review"


@pytest.mark.anyio
async def test_a_graph_engine_refuses_an_agent_run_and_a_decision_on_an_ended_run(
    tmp_path: Path,
) -> None:
    async with SqliteStore.open(tmp_path / "log.db") as store:
        agent = Engine(Runtime(store), ScriptedModel([say("hi")]), Tools(()))
        await agent.start("go", principal=USER, run_id="agent")
        count = len(await store.read("agent"))
        for migration in (None, "m"):
            with pytest.raises(ConfigError, match="is an agent run"):
                await refund_engine(store).resume("agent", migration=migration)
        assert len(await store.read("agent")) == count

        # A run cancelled while it waited for a reviewer (here: a fork that ends so) takes no
        # decision, although a review was the last thing it asked for.
        waiting = await refund_engine(store).start({"asked": 50}, principal=USER, run_id="w")
        assert waiting.phase == "awaiting_review"
        at = len(await store.read("w"))
        ended = await fork_run(
            store, "w", at, new_run_id="c", then=[RunCancelled(at=9, reason="x")]
        )
        assert ended.phase == "cancelled"
        with pytest.raises(DecisionError, match="cancelled, not awaiting review"):
            await review_graph_run(store, "c", "approve")
        assert len(await store.read("c")) == at + 2


@pytest.mark.anyio
async def test_a_rejected_graph_run_is_reported_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"
    async with SqliteStore.open(db) as store:
        waiting = await refund_engine(store).start({"asked": 50}, principal=USER, run_id="r")
        assert waiting.phase == "awaiting_review"
        await review_graph_run(store, "r", "reject", by="ann", note="no")
        assert (await refund_engine(store).resume("r")).phase == "failed"
    code, out = await cli(capsys, "report", "--db", str(db))
    assert code == 0 and "unfinished" not in out and "failed" in out, out
