"""Graph workflows: nodes, static and conditional edges, fan-out and fan-in, on the log.

A graph runs in steps. Each step runs a set of tasks (a node, or a node applied to one
mapped item) concurrently; their updates are merged into the state with the declared
reducers in task order, whatever order they finish in; then the edges of the step's nodes
decide the next tasks, and that decision is recorded (``step_routed``). The state is a fold
of the log, so a graph run resumes after a crash and replays like an agent run.

    g = Graph("triage", reducers={"notes": append})
    g.add_node("classify", classify)            # async def classify(state) -> dict
    g.route("classify", pick, targets={"urgent", "routine"})
    g.fanout("urgent", ["page", "ticket"], then="summarize")
    g.map("routine", "score", over=lambda s: s["items"], then="summarize")
    g.edge("summarize", END)
    flow = g.compile()                          # validated here, not at run time

Nodes must be safe to run again: a step cut short by a crash runs again on resume.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from hashlib import sha256
from typing import Any, Literal, TypeAlias, final

import msgspec

from ..core.definition import digest_parts, hash_parts, part_digest
from ..core.events import Principal, Task
from ..core.fingerprint import code_fingerprint
from ..core.limits import Budget, Meter
from ..core.redaction import Redaction
from ..core.tools import Retry
from ..errors import ConfigError

__all__ = ["END", "CompiledGraph", "Graph", "NodeContext", "add", "append", "merge", "replace"]

END = "__end__"
State: TypeAlias = dict[str, Any]
NodeFn: TypeAlias = Callable[..., Awaitable[Mapping[str, Any]]]  # (state) or (state, NodeContext)
Reducer: TypeAlias = Callable[[Any, Any], Any]
_encoder = msgspec.json.Encoder(order="deterministic")


def replace(old: Any, new: Any) -> Any:
    """The default reducer: the newest value wins."""
    return new


def append(old: Any, new: Any) -> Any:
    """Lists concatenate (a fan-in collects every branch's items, in branch order)."""
    return [*(old or []), *new]


def add(old: Any, new: Any) -> Any:
    return (old or 0) + new


def merge(old: Any, new: Any) -> Any:
    return {**(old or {}), **new}


class NodeContext(msgspec.Struct, frozen=True):
    """What a node may take as its second parameter: where it runs. ``key`` is unique and
    stable within the run (node, step and item), for naming the child runs a node starts.
    ``budget`` is what the graph run has left for this task's child runs, ``meter`` takes
    what they spent, ``redaction`` is the run's policy, which its children inherit, and
    ``runtime`` is where they execute (the run's own store, clock, ids, cipher, observers)."""

    run_id: str
    step: int
    node: str
    item: str
    principal: Principal
    budget: Budget = Budget()
    meter: Meter | None = None
    redaction: Redaction | None = None
    runtime: Any = None  # the run's Runtime (router.run.runtime), on which its child runs execute

    @property
    def key(self) -> str:
        return f"{self.node}.{self.step}" + (
            f".{sha256(self.item.encode()).hexdigest()[:8]}" if self.item else ""
        )


class _Node(msgspec.Struct, frozen=True):
    name: str
    fn: Any
    retry: Retry
    timeout_s: float | None
    takes_context: bool = False


class _Edges(msgspec.Struct, frozen=True):
    """Where a node leads: one static target, a route, a fan-out or a map."""

    kind: Literal["edge", "route", "fanout", "map"]
    targets: tuple[str, ...]
    then: str = ""
    fn: Any = None  # route: state -> target; map: state -> items


@final
class Graph:
    def __init__(self, name: str, *, reducers: Mapping[str, Reducer] | None = None) -> None:
        self.name = name
        self.reducers = dict(reducers or {})
        self._nodes: dict[str, _Node] = {}
        self._edges: dict[str, _Edges] = {}
        self._start: str = ""

    def add_node(
        self, name: str, fn: NodeFn, *, retry: Retry | None = None, timeout_s: float | None = None
    ) -> None:
        if name == END or name in self._nodes:
            raise ConfigError(f"graph {self.name!r}: node {name!r} is already defined or reserved")
        takes_context = len(inspect.signature(fn).parameters) >= 2
        self._nodes[name] = _Node(name, fn, retry or Retry(), timeout_s, takes_context)

    def start(self, node: str) -> None:
        self._start = node

    def edge(self, src: str, dst: str) -> None:
        self._set(src, _Edges("edge", (dst,)))

    def route(
        self, src: str, fn: Callable[[State], str | Sequence[str]], *, targets: Iterable[str]
    ) -> None:
        """After ``src``, go where ``fn(state)`` says: one of ``targets`` (or several, to fan
        out)."""
        self._set(
            src, _Edges("route", tuple(sorted(targets)), fn=fn)
        )  # sorted: a set has no stable order

    def fanout(self, src: str, branches: Sequence[str], *, then: str) -> None:
        """After ``src``, run ``branches`` in parallel, then ``then`` once with all their
        updates."""
        self._set(src, _Edges("fanout", tuple(branches), then=then))

    def map(
        self, src: str, node: str, *, over: Callable[[State], Sequence[Any]], then: str
    ) -> None:
        """After ``src``, run ``node`` once per item of ``over(state)`` (its state has ``item``)."""
        self._set(src, _Edges("map", (node,), then=then, fn=over))

    def _set(self, src: str, edges: _Edges) -> None:
        if src in self._edges:
            raise ConfigError(f"graph {self.name!r}: node {src!r} already has its edges")
        self._edges[src] = edges

    def compile(self) -> CompiledGraph:
        """Validate and freeze the graph. Raises ConfigError on an unknown node, a node with no
        way out, a node that cannot be reached, or a missing start."""
        return CompiledGraph(
            self.name, dict(self._nodes), dict(self._edges), self._start, dict(self.reducers)
        )


@final
class CompiledGraph:
    def __init__(
        self,
        name: str,
        nodes: dict[str, _Node],
        edges: dict[str, _Edges],
        start: str,
        reducers: dict[str, Reducer],
    ) -> None:
        self.name, self.nodes, self.edges, self.start, self.reducers = (
            name,
            nodes,
            edges,
            start,
            reducers,
        )
        self._validate()
        self.parts = self._parts()
        self.definition = hash_parts(self.parts)

    def _validate(self) -> None:
        def known(node: str, where: str) -> None:
            if node != END and node not in self.nodes:
                raise ConfigError(f"graph {self.name!r}: {where} names unknown node {node!r}")

        if not self.start:
            raise ConfigError(f"graph {self.name!r}: no start node")
        known(self.start, "the start")
        branch_of: dict[str, str] = {}
        for src, e in self.edges.items():
            known(src, "an edge")
            for t in e.targets:
                known(t, f"the edges of {src!r}")
            if e.then:
                known(e.then, f"the join of {src!r}")
            if e.kind in ("fanout", "map"):
                for t in e.targets:
                    branch_of[t] = e.then
        for name in self.nodes:
            if name not in self.edges and name not in branch_of:
                raise ConfigError(
                    f"graph {self.name!r}: node {name!r} has no outgoing edge (use edge(node, END))"
                )
        reached, todo = set(), [self.start]
        while todo:
            node = todo.pop()
            if node in reached or node == END:
                continue
            reached.add(node)
            out = self.edges.get(node)
            if out is not None:
                todo.extend(out.targets)
                todo.extend([out.then] if out.then else [])
            elif node in branch_of:
                todo.append(branch_of[node])
        unreachable = sorted(set(self.nodes) - reached)
        if unreachable:
            raise ConfigError(f"graph {self.name!r}: unreachable nodes {unreachable}")
        self._joins = branch_of

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "nodes": {
                n.name: {"retry": n.retry, "timeout_s": n.timeout_s} for n in self.nodes.values()
            },
            "edges": {
                src: {"kind": e.kind, "targets": e.targets, "then": e.then}
                for src, e in self.edges.items()
            },
            "reducers": {
                key: getattr(fn, "__name__", "reducer") for key, fn in sorted(self.reducers.items())
            },
        }

    def _parts(self) -> dict[str, str]:
        """The definition's parts by name, each hashed: the shape, and the code of every
        node, route, map and reducer (``router.core.fingerprint``). A resume names the parts
        that changed."""
        out = digest_parts(graph=self.describe())
        for name, node in sorted(self.nodes.items()):
            out[f"node:{name}"] = part_digest(code_fingerprint(node.fn))
        for src, e in sorted(self.edges.items()):
            if e.fn is not None:
                out[f"{e.kind}:{src}"] = part_digest(code_fingerprint(e.fn))
        for key, fn in sorted(self.reducers.items()):
            out[f"reducer:{key}"] = part_digest(code_fingerprint(fn))
        return out

    def mermaid(self) -> str:
        lines = ["flowchart TD", f"    START(( )) --> {self.start}"]
        for src, e in self.edges.items():
            for t in e.targets:
                target = "END(( ))" if t == END else t
                arrow = {"edge": "-->", "route": "-.->", "fanout": "==>", "map": "==>|each item|"}[
                    e.kind
                ]
                lines.append(f"    {src} {arrow} {target}")
                if e.then:
                    lines.append(f"    {t} --> {e.then}")
        return "\n".join(lines)

    # --- the pure part of running ---------------------------------------------------

    def first_tasks(self) -> tuple[Task, ...]:
        return (Task(self.start),)

    def merge(self, state: State, updates: Sequence[Mapping[str, Any]]) -> State:
        """Apply updates in order, with each key's reducer (``replace`` by default)."""
        merged = dict(state)
        for update in updates:
            for key, value in update.items():
                merged[key] = self.reducers.get(key, replace)(merged.get(key), value)
        return merged

    def route_after(self, tasks: Sequence[Task], state: State) -> tuple[Task, ...]:
        """The next step's tasks: the edges of the nodes that just ran, in task order,
        each task once."""
        out: list[Task] = []
        for task in tasks:
            e = self.edges.get(task.node)
            if e is None:  # a fan-out branch or a mapped node: on to the join
                nxt = [Task(self._joins[task.node])]
            elif e.kind == "edge":
                nxt = [Task(e.targets[0])]
            elif e.kind == "route":
                chosen = e.fn(state)
                chosen = [chosen] if isinstance(chosen, str) else list(chosen)
                bad = [c for c in chosen if c not in e.targets]
                if bad:
                    raise ConfigError(
                        f"graph {self.name!r}: the route of {task.node!r} chose {bad}, not among "
                        f"its targets {sorted(e.targets)}"
                    )
                nxt = [Task(c) for c in chosen]
            elif e.kind == "fanout":
                nxt = [Task(b) for b in e.targets]
            else:
                items = e.fn(state)
                nxt = [Task(e.targets[0], _encoder.encode(item).decode()) for item in items]
                if not nxt:
                    nxt = [Task(e.then)]
            out.extend(t for t in nxt if t.node != END and t not in out)
        return tuple(out)
