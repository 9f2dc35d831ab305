"""A graph run as a finite-state machine, like the agent loop's. Pure: no I/O, no clock.

``apply_graph(merge, state, event)`` folds one event through ``GRAPH_TABLE``; a (phase,
event kind) pair that is not in it, or an event that does not fit the step (a node that is
not its task or has its result, a routing before every result), never raises: it marks the
state faulty and the next effect records ``run_failed``. ``next_graph_effect`` says what
the driver must do next: run the step's tasks (those without a result), route after them,
record a decision (a limit crossed, a node that failed, a review to ask for), wait for a
reviewer, or stop. Limits are checked there, by the same ``check_spend`` that agent runs
use, before every step and again before routing (so what the step's child runs spent is
counted before the run goes on).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import msgspec
from msgspec.structs import replace

from .effects import AwaitReview, Effect, Idle, Record
from .events import (
    EVENT_TYPES,
    NO_USAGE,
    Event,
    GraphStarted,
    Kind,
    LimitExceeded,
    Limits,
    NodeFailed,
    NodeFinished,
    Principal,
    ReviewDecided,
    ReviewRequested,
    RunCancelled,
    RunFailed,
    RunMigrated,
    StepRouted,
    Task,
    Usage,
    kind_of,
    kind_of_type,
)
from .limits import budgeted, check_spend

__all__ = [
    "GRAPH_TABLE",
    "GraphPhase",
    "GraphState",
    "RouteStep",
    "RunStep",
    "Stop",
    "apply_graph",
    "fold_graph",
    "graph_mermaid",
    "next_graph_effect",
]


class GraphPhase(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    AWAITING_REVIEW = "awaiting_review"
    DONE = "done"
    FAILED = "failed"
    LIMIT_EXCEEDED = "limit_exceeded"
    CANCELLED = "cancelled"


NEW, RUNNING, AWAITING_REVIEW = GraphPhase.NEW, GraphPhase.RUNNING, GraphPhase.AWAITING_REVIEW
DONE, FAILED = GraphPhase.DONE, GraphPhase.FAILED
LIMIT_EXCEEDED, CANCELLED = GraphPhase.LIMIT_EXCEEDED, GraphPhase.CANCELLED
TERMINAL = frozenset({DONE, FAILED, LIMIT_EXCEEDED, CANCELLED})
LIVE = (RUNNING, AWAITING_REVIEW)


class GraphState(msgspec.Struct, frozen=True):
    """A graph run folded from its events: a spend record like an agent run's."""

    phase: GraphPhase = NEW
    state: dict[str, Any] = {}
    step: int = 0
    tasks: tuple[Task, ...] = ()
    results: tuple[NodeFinished | NodeFailed, ...] = ()  # of the current step, as recorded
    finished: tuple[Task, ...] = ()  # the tasks of ``results``, in the same order
    failure: NodeFailed | None = None  # the step's first node that failed
    reason: str = ""
    started_at: int = 0
    last_at: int = 0
    paused_us: int = 0  # time parked (waiting for a person or a resume): not active
    graph: str = ""
    definition: str = ""
    limits: Limits = Limits()
    principal: Principal = Principal(id="")
    pending_review: str = ""  # in awaiting_review: before_node or after_node
    ran: tuple[str, ...] = ()  # the nodes of the last step that finished
    reviewed: str = ""  # the review already decided for this step ("before_node" or "after_node")
    usage: Usage = NO_USAGE  # what the nodes' child runs spent
    cost_nusd: int = 0
    budgeted: bool = False
    fault: str = ""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def steps(self) -> int:
        return self.step


# --- effects --------------------------------------------------------------------------


class RunStep(Effect, frozen=True):
    """Run these tasks of the step (concurrently) and record their results in task order."""

    tasks: tuple[Task, ...]


class RouteStep(Effect, frozen=True):
    """Merge the step's updates and let the edges choose the next tasks."""


class Stop(Effect, frozen=True):
    phase: GraphPhase


# --- the transition table --------------------------------------------------------------

Merge: TypeAlias = Callable[[dict[str, Any], Sequence[Mapping[str, Any]]], dict[str, Any]]
Handler: TypeAlias = Callable[[GraphState, Any, "Merge"], GraphState]


def _started(s: GraphState, e: GraphStarted, merge: Merge) -> GraphState:
    if not e.first:  # a running graph always has a step to run
        return _fault(s, e, "starts with no tasks")
    return GraphState(
        phase=RUNNING,
        state=msgspec.json.decode(e.state),
        tasks=e.first,
        started_at=e.at,
        last_at=e.at,
        graph=e.graph,
        definition=e.definition,
        limits=e.limits,
        principal=e.principal,
        budgeted=budgeted(e.limits),
    )


def _node_ended(s: GraphState, e: NodeFinished | NodeFailed, merge: Merge) -> GraphState:
    task = Task(node=e.node, item=e.item)  # compared in C: a step may hold many tasks
    if e.step != s.step or task not in s.tasks:
        return _fault(s, e, f"node {e.node!r} of step {e.step} is not a task of step {s.step}")
    if task in s.finished:
        return _fault(s, e, f"node {e.node!r} already has its result in step {s.step}")
    usage = s.usage
    if e.usage.input_tokens or e.usage.output_tokens:
        usage = Usage(
            input_tokens=usage.input_tokens + e.usage.input_tokens,
            output_tokens=usage.output_tokens + e.usage.output_tokens,
        )
    return replace(
        s,
        results=s.results + (e,),
        finished=s.finished + (task,),
        failure=s.failure or (e if isinstance(e, NodeFailed) else None),
        usage=usage,
        cost_nusd=s.cost_nusd + e.cost_nusd,
        last_at=e.at,
    )


def _routed(s: GraphState, e: StepRouted, merge: Merge) -> GraphState:
    if e.step != s.step:
        return _fault(s, e, f"routes step {e.step}, not step {s.step}")
    if len(s.results) != len(s.tasks):
        return _fault(s, e, f"routes step {s.step} before every task has its result")
    by_task = {(f.node, f.item): f.update for f in s.results if isinstance(f, NodeFinished)}
    updates = [
        msgspec.json.decode(by_task[(t.node, t.item)])
        for t in s.tasks
        if (t.node, t.item) in by_task
    ]
    return replace(
        s,
        phase=RUNNING if e.next else DONE,
        state=merge(s.state, updates),
        step=e.step + 1,
        tasks=e.next,
        results=(),
        finished=(),
        failure=None,
        last_at=e.at,
        reviewed="",
        ran=tuple(t.node for t in s.tasks),
    )


def _review_requested(s: GraphState, e: ReviewRequested, merge: Merge) -> GraphState:
    return replace(s, phase=AWAITING_REVIEW, pending_review=e.rule, last_at=e.at)


def _after_a_wait(s: GraphState, e: Event) -> GraphState:
    """``s`` with the time since its last event counted as parked, not active."""
    return replace(s, paused_us=s.paused_us + e.at - s.last_at) if e.at > s.last_at else s


def _resumed(s: GraphState, e: Event, merge: Merge) -> GraphState:
    return replace(_after_a_wait(s, e), last_at=max(e.at, s.last_at))


def _review_decided(s: GraphState, e: ReviewDecided, merge: Merge) -> GraphState:
    s = _after_a_wait(s, e)
    if e.decision == "reject":
        note = f" ({e.note})" if e.note else ""
        return replace(
            s,
            phase=FAILED,
            reason=f"review ({s.pending_review}) rejected by {e.by or 'a reviewer'}{note}",
            pending_review="",
            last_at=e.at,
        )
    return replace(s, phase=RUNNING, reviewed=s.pending_review, pending_review="", last_at=e.at)


def _noted(s: GraphState, e: Event, merge: Merge) -> GraphState:
    return replace(s, last_at=max(s.last_at, e.at))


def _migrated(s: GraphState, e: RunMigrated, merge: Merge) -> GraphState:
    if e.from_definition != s.definition:
        return _fault(s, e, "migrates from a definition the run is not under")
    return replace(s, definition=e.to_definition, last_at=e.at)


def _ended(phase: GraphPhase) -> Handler:
    def end(s: GraphState, e: LimitExceeded | RunFailed | RunCancelled, merge: Merge) -> GraphState:
        if isinstance(e, LimitExceeded):
            reason = f"{e.limit}: {e.value:g} (limit {e.ceiling:g})" + (
                f" ({e.detail})" if e.detail else ""
            )
        else:
            reason = e.reason
        return replace(s, phase=phase, reason=reason, last_at=max(s.last_at, e.at))

    return end


def _fault(s: GraphState, e: Event, why: str) -> GraphState:
    return replace(s, fault=f"{kind_of(e)} in phase {s.phase}: {why}")


GRAPH_TABLE: dict[tuple[GraphPhase, Kind], tuple[Handler, tuple[GraphPhase, ...]]] = {
    (NEW, Kind.GRAPH_STARTED): (_started, (RUNNING,)),
    (RUNNING, Kind.NODE_FINISHED): (_node_ended, (RUNNING,)),
    (RUNNING, Kind.NODE_FAILED): (_node_ended, (RUNNING,)),
    (RUNNING, Kind.STEP_ROUTED): (_routed, (RUNNING, DONE)),
    (RUNNING, Kind.REVIEW_REQUESTED): (_review_requested, (AWAITING_REVIEW,)),
    (AWAITING_REVIEW, Kind.REVIEW_DECIDED): (_review_decided, (RUNNING, FAILED)),
}
for _phase in LIVE:
    GRAPH_TABLE[(_phase, Kind.RUN_RESUMED)] = (_resumed, (_phase,))
    GRAPH_TABLE[(_phase, Kind.RUN_PARKED)] = (_noted, (_phase,))
    GRAPH_TABLE[(_phase, Kind.RUN_FORKED)] = (_noted, (_phase,))
    GRAPH_TABLE[(_phase, Kind.RUN_MIGRATED)] = (_migrated, (_phase,))
    GRAPH_TABLE[(_phase, Kind.LIMIT_EXCEEDED)] = (_ended(LIMIT_EXCEEDED), (LIMIT_EXCEEDED,))
    GRAPH_TABLE[(_phase, Kind.RUN_FAILED)] = (_ended(FAILED), (FAILED,))
    GRAPH_TABLE[(_phase, Kind.RUN_CANCELLED)] = (_ended(CANCELLED), (CANCELLED,))

_HANDLERS: dict[GraphPhase, dict[type[Event], Handler]] = {
    phase: {
        t: GRAPH_TABLE[(phase, kind_of_type(t))][0]
        for t in EVENT_TYPES
        if (phase, kind_of_type(t)) in GRAPH_TABLE
    }
    for phase in GraphPhase
}


def _replace_all(state: dict[str, Any], updates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged = dict(state)
    for update in updates:
        merged.update(update)
    return merged


def apply_graph(merge: Merge | None, s: GraphState, event: Event) -> GraphState:
    """Fold one event into a graph run's state. Never raises. ``merge`` applies a step's
    updates with the graph's reducers (``CompiledGraph.merge``); without it, updates merge
    by replacement: the phases are the same, the state's values may not be."""
    handler = _HANDLERS[s.phase].get(type(event))
    if handler is None:
        return _fault(s, event, "not in the transition table")
    try:
        return handler(s, event, merge or _replace_all)
    except Exception as exc:  # a malformed event or a failing reducer becomes a fault
        return _fault(s, event, f"{type(exc).__name__}: {exc}")


def fold_graph(merge: Merge | None, events: Iterable[Event]) -> GraphState:
    """Rebuild a graph run's state from its events (``merge``: see ``apply_graph``)."""
    s = GraphState()
    for event in events:
        s = apply_graph(merge, s, event)
    return s


def next_graph_effect(
    s: GraphState,
    review_before: frozenset[str] = frozenset(),
    review_after: frozenset[str] = frozenset(),
) -> Effect:
    """What the driver must do next. Limits are checked here, before every step and
    before routing."""
    phase = s.phase
    if phase in TERMINAL:
        return Stop(phase)
    if phase is NEW:
        return _IDLE
    if s.fault:
        return Record(RunFailed(at=s.last_at, code="invalid_transition", reason=s.fault))
    if phase is AWAITING_REVIEW:
        return AwaitReview(s.pending_review)
    results = s.results
    if s.budgeted or (not results and s.step >= s.limits.max_steps):  # else nothing to cross
        exceeded = check_spend(s, not results)
        if exceeded is not None:
            return Record(exceeded)
    if results:
        return _after_results(s)
    if review_before or review_after:
        review = _review(s, review_before, review_after)
        if review is not None:
            return Record(review)
    return RunStep(s.tasks)


_IDLE = Idle()
_ROUTE = RouteStep()


def _after_results(s: GraphState) -> Effect:
    """Once a step has results: end the run on a node that failed, run the tasks that have
    none yet (a step cut short by a fork between its results), or route."""
    failed = s.failure
    if failed is not None:
        what = "timed out" if failed.timed_out else "failed"
        reason = f"node {failed.node!r} {what}: {failed.error}"
        return Record(RunFailed(at=s.last_at, code="node_failed", reason=reason))
    if len(s.finished) == len(s.tasks):
        return _ROUTE
    return RunStep(tuple(t for t in s.tasks if t not in s.finished))


def _review(s: GraphState, before: frozenset[str], after: frozenset[str]) -> ReviewRequested | None:
    """Before a step: wait for a person if the last step ran a node to review after, or
    this one runs a node to review before (each asked once per step)."""
    if s.reviewed == "before_node":
        return None
    if s.step and s.reviewed != "after_node":
        done = sorted(set(s.ran) & after)
        if done:
            return ReviewRequested(
                at=s.last_at,
                rule="after_node",
                call_ids=tuple(done),
                reason=f"the results of {', '.join(done)} wait for a reviewer",
            )
    coming = sorted({t.node for t in s.tasks} & before)
    if coming:
        return ReviewRequested(
            at=s.last_at,
            rule="before_node",
            call_ids=tuple(coming),
            reason=f"{', '.join(coming)} {'needs' if len(coming) == 1 else 'need'} approval",
        )
    return None


def graph_mermaid() -> str:
    """The graph-run transition table as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {NEW.value}"]
    seen: set[tuple[str, str, str]] = set()
    for (phase, kind), (_, targets) in GRAPH_TABLE.items():
        for target in targets:
            if (phase.value, target.value, kind.value) not in seen:
                seen.add((phase.value, target.value, kind.value))
                lines.append(f"    {phase.value} --> {target.value}: {kind.value}")
    for phase in LIVE:
        lines.append(f"    {phase.value} --> {FAILED.value}: any other event (run_failed)")
    for phase in sorted(TERMINAL):
        lines.append(f"    {phase.value} --> [*]")
    return "\n".join(lines)
