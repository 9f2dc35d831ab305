"""What a run's page draws, derived from its events alone. Pure.

``router.core.run_page`` turns these into HTML: the log cut into rows (model turns, or a
graph run's steps), each row's lanes (its tool calls, or its node tasks) with what became
of them, the waits for a person, the spend with its running totals, and a graph run's node
visits step by step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from .events import (
    ContextSummarized,
    Event,
    GraphStarted,
    MemoryRecalled,
    ModelResponded,
    ModelRouted,
    NodeFailed,
    NodeFinished,
    ReviewDecided,
    ReviewRequested,
    RunInterrupted,
    StepRouted,
    Task,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
)
from .timeline import describe

__all__ = [
    "BAD",
    "WAITING",
    "Lane",
    "Point",
    "Row",
    "Visit",
    "Wait",
    "lanes_of",
    "rows_of",
    "spend_of",
    "visits_of",
    "waits_of",
]

_Spender = (
    ModelResponded | ContextSummarized | ToolSucceeded | ToolFailed | NodeFinished | NodeFailed
)
_Result = ToolSucceeded | ToolFailed | NodeFinished | NodeFailed
_CallEvent = ToolStarted | ToolSucceeded | ToolFailed | ToolCallRejected | ToolCallDenied
_BeforeTurn = ModelRouted | MemoryRecalled | ContextSummarized | ModelResponded

BAD = frozenset({"failed", "timed out", "rejected", "denied", "rejected by reviewer"})
WAITING = frozenset({"awaiting review", "interrupted"})


class Point(msgspec.Struct, frozen=True):
    """An event that spent tokens or money (every model turn does), and the totals after it."""

    seq: int
    what: str  # the event's label and first line, as the timeline words it
    tokens_in: int
    tokens_out: int
    nusd: int
    total_in: int
    total_out: int
    total_nusd: int

    @property
    def total_tokens(self) -> int:
        return self.total_in + self.total_out


class Wait(msgspec.Struct):
    """A wait for a person: a review asked for, or calls interrupted by a crash."""

    kind: str  # "review" or "interrupt"
    start: int  # the seq of the request
    request: Event
    end: int = -1  # the seq of the decision that ended it; -1: still waiting
    decision: Event | None = None


class Row(msgspec.Struct):
    """A model turn (a graph run: a step) and the events up to the next, or the run's start."""

    kind: str  # "start", "turn" or "step"
    step: int = -1  # -1: a turn whose model call never answered
    tasks: tuple[Task, ...] = ()  # a graph step's tasks, as routed
    events: list[tuple[int, Event]] = []  # (seq, event)
    closed: bool = False  # a graph run's row ends with its routing


class Lane(msgspec.Struct):
    """One tool call (a graph run: one node task) of a row, and its events there."""

    key: str  # the call's id, or the node (with its item, for a map)
    name: str  # the tool's or the node's
    opened: int  # where in the row it begins: the turn that proposed it; -1: the step's start
    points: list[tuple[int, Event]] = []  # (index in the row, event)
    outcome: str = ""  # what its last event says became of it
    tries: int = 0  # how often it ran
    spans: list[tuple[int, int, str]] = []  # its bar: (from, to, kind) in row positions

    @property
    def retries(self) -> int:
        return max(0, self.tries - 1)


class Visit(msgspec.Struct, frozen=True):
    """A node a graph step ran (or is to run: outcome "pending")."""

    node: str
    item: str
    outcome: str  # "ok", "failed", "timed out" or "pending"
    tries: int


def spend_of(events: Sequence[Event]) -> list[Point]:
    """Every model turn, and every other event that spent, with the running totals after it:
    the same sums the run's fold keeps, so the last point's totals are the run's."""
    points, total_in, total_out, total_nusd = [], 0, 0, 0
    for seq, event in enumerate(events):
        if not isinstance(event, _Spender):
            continue
        u = event.usage
        if not (isinstance(event, ModelResponded) or u.total_tokens or event.cost_nusd):
            continue
        total_in += u.input_tokens
        total_out += u.output_tokens
        total_nusd += event.cost_nusd
        label, text = describe(event)
        what = f"{label}: {text.splitlines()[0].strip()}" if text else label
        points.append(
            Point(
                seq,
                what,
                u.input_tokens,
                u.output_tokens,
                event.cost_nusd,
                total_in,
                total_out,
                total_nusd,
            )
        )
    return points


def waits_of(events: Sequence[Event]) -> list[Wait]:
    """Each review from its request to its decision, and each interruption to the decision
    on the last of its calls."""
    waits: list[Wait] = []
    review: Wait | None = None
    held: dict[str, Wait] = {}  # interrupted call -> its wait
    for seq, event in enumerate(events):
        if isinstance(event, ReviewRequested):
            review = Wait("review", seq, event)
            waits.append(review)
        elif isinstance(event, ReviewDecided) and review is not None:
            review.end, review.decision, review = seq, event, None
        elif isinstance(event, RunInterrupted):
            waits.append(Wait("interrupt", seq, event))
            held.update(dict.fromkeys(event.call_ids, waits[-1]))
        elif isinstance(event, ToolCallResolved) and event.call_id in held:
            wait = held.pop(event.call_id)
            if all(other is not wait for other in held.values()):
                wait.end, wait.decision = seq, event
    return waits


def rows_of(events: Sequence[Event], graph: bool) -> list[Row]:
    """The log cut into rows: an agent run's before each model turn (with what was done for
    that turn: routing, recall, a summary), a graph run's after each routing."""
    rows = [Row("start")]
    tasks: tuple[Task, ...] = ()
    step = 0
    for seq, event in enumerate(events):
        row = rows[-1]
        if graph and row.closed:
            row = Row("step", step=step, tasks=tasks)
            rows.append(row)
        elif (
            not graph and isinstance(event, _BeforeTurn) and (row.kind == "start" or row.step >= 0)
        ):
            row = Row("turn")
            rows.append(row)
        row.events.append((seq, event))
        if isinstance(event, ModelResponded):
            row.step = event.step
        elif isinstance(event, GraphStarted):
            tasks, row.closed = event.first, True
        elif isinstance(event, StepRouted):
            tasks, step, row.closed = event.next, event.step + 1, True
    return [row for row in rows if row.events]


def _task_key(node: str, item: str) -> str:
    return f"{node}[{item}]" if item else node


def lanes_of(row: Row, graph: bool) -> list[Lane]:
    """The row's calls in the order the model proposed them (a graph step's tasks in routing
    order), each with its events in the row, its outcome, tries and bar."""
    # A graph step's tasks open before its first event: they run from the step's start.
    lanes = {
        _task_key(t.node, t.item): Lane(_task_key(t.node, t.item), t.node, -1) for t in row.tasks
    }
    for index, (_, event) in enumerate(row.events):
        if isinstance(event, ModelResponded):
            lanes.update({c.id: Lane(c.id, c.name, index) for c in event.tool_calls})
        if isinstance(event, ReviewRequested | ReviewDecided | RunInterrupted):
            keys = set(event.call_ids)  # a graph run's reviews name nodes, which a map runs often
            held = [x for x in lanes.values() if x.key in keys or (graph and x.name in keys)]
        elif isinstance(event, NodeFinished | NodeFailed):
            key = _task_key(event.node, event.item)
            held = [lanes.setdefault(key, Lane(key, event.node, -1))]
        elif isinstance(event, _CallEvent):
            held = [lanes.setdefault(event.call_id, Lane(event.call_id, event.tool, index))]
        elif isinstance(event, ToolCallResolved) and event.call_id in lanes:
            held = [lanes[event.call_id]]
        else:
            held = []
        for lane in held:
            lane.points.append((index, event))
    for lane in lanes.values():
        lane.outcome = _outcome(lane, graph)
        lane.tries = _tries(lane)
        lane.spans = _spans(lane, len(row.events) - 1, graph)
    return list(lanes.values())


_OUTCOMES: dict[type[Event], Callable[[Any], str]] = {
    ToolStarted: lambda e: "started",
    ToolSucceeded: lambda e: "ok",
    ToolFailed: lambda e: "timed out" if e.timed_out else "failed",
    NodeFinished: lambda e: "ok",
    NodeFailed: lambda e: "timed out" if e.timed_out else "failed",
    ToolCallRejected: lambda e: "rejected",
    ToolCallDenied: lambda e: "denied",
    ReviewRequested: lambda e: "awaiting review",
    ReviewDecided: lambda e: "approved" if e.decision == "approve" else "rejected by reviewer",
    RunInterrupted: lambda e: "interrupted",
    ToolCallResolved: lambda e: {"retry": "to retry", "supply": "supplied", "fail": "failed"}[
        e.decision
    ],
}


def _outcome(lane: Lane, graph: bool) -> str:
    outcome = "pending" if graph else "proposed"
    for _, event in lane.points:
        outcome = _OUTCOMES[type(event)](event)
    return outcome


def _tries(lane: Lane) -> int:
    """Each result's attempts, and each start that has no result (one a crash cut short,
    before a reviewer's retry)."""
    results = [e for _, e in lane.points if isinstance(e, _Result)]
    starts = sum(isinstance(e, ToolStarted) for _, e in lane.points)
    return sum(e.attempts for e in results) + max(0, starts - len(results))


def _spans(lane: Lane, last: int, graph: bool) -> list[tuple[int, int, str]]:
    """ "run" from a start to its result (a graph node runs from its step's start), "wait"
    while a person decides, "gap" while a call waits its turn; nothing once it is over."""
    spans, at, kind, over = [], lane.opened, "run" if graph else "gap", False
    for index, event in lane.points:
        if kind and index > at:
            # a node a reviewer must approve first did not run before the review
            before = isinstance(event, ReviewRequested) and event.rule == "before_node"
            spans.append((at, index, "gap" if before else kind))
        at = index
        over = over or isinstance(event, _Result | ToolCallRejected | ToolCallDenied)
        over = over or isinstance(event, ReviewDecided) and event.decision == "reject"
        over = over or isinstance(event, ToolCallResolved) and event.decision != "retry"
        if isinstance(event, ReviewRequested | RunInterrupted):
            kind = "wait"
        elif over:
            kind = ""
        else:
            kind = "run" if graph or isinstance(event, ToolStarted) else "gap"
    if kind and last > at:
        spans.append((at, last, kind))
    return spans


def visits_of(events: Sequence[Event], started: GraphStarted) -> dict[int, list[Visit]]:
    """A graph run's node visits by step, in log order, with the tasks routed but not run
    yet (the run waits, failed or was cancelled) as pending visits of their step."""
    visits: dict[int, list[Visit]] = {}
    step, tasks = 0, started.first
    for event in events:
        if isinstance(event, NodeFinished | NodeFailed):
            outcome = _OUTCOMES[type(event)](event)
            visit = Visit(event.node, event.item, outcome, event.attempts)
            visits.setdefault(event.step, []).append(visit)
        elif isinstance(event, StepRouted):
            step, tasks = event.step + 1, event.next
    ran = {(v.node, v.item) for v in visits.get(step, [])}
    pending = [Visit(t.node, t.item, "pending", 0) for t in tasks if (t.node, t.item) not in ran]
    if pending:
        visits.setdefault(step, []).extend(pending)
    return visits
