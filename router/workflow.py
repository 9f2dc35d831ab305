"""The driver of graph runs: runs each step's tasks concurrently and records the step.

One append per step: the step's node results and the routing decision go in one batch,
committed before the next step's nodes run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import anyio
import msgspec

from .chain import Chain, verify
from .clock import Clock, IdSource, RandomIds, SystemClock
from .errors import ConfigError, DefinitionChanged, RunNotFound
from .events import (
    Event,
    GraphStarted,
    LimitExceeded,
    Limits,
    NodeFailed,
    NodeFinished,
    Principal,
    RunCancelled,
    RunFailed,
    ReviewRequested,
    RunResumed,
    StepRouted,
    Task,
    encode_event,
)
from .graph import CompiledGraph, GraphState, NodeContext, apply_graph, fold_graph
from .protocols import Cipher, LeaseChange, Store
from .replay import Divergence, ReplayReport
from .runlog import decode_run, sealer

__all__ = ["GraphEngine", "GraphResult", "subgraph"]

_encoder = msgspec.json.Encoder(order="deterministic")


class GraphResult(msgspec.Struct, frozen=True):
    run_id: str
    phase: str
    state: dict[str, Any]
    steps: int
    reason: str = ""


class _GraphRun:
    __slots__ = ("run_id", "state", "chain", "pending", "leased")

    def __init__(self, run_id: str, state: GraphState, chain: Chain, *, leased: bool) -> None:
        self.run_id, self.state, self.chain = run_id, state, chain
        self.pending: list[Event] = []
        self.leased = leased  # this engine holds the run's lease


@final
class GraphEngine:
    """Runs a compiled graph on a store; resumes and replays its runs."""

    def __init__(
        self,
        store: Store,
        graph: CompiledGraph,
        *,
        limits: Limits | None = None,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        owner: str | None = None,
        lease_ttl_s: float = 30.0,
        cipher: Cipher | None = None,
        review_before: frozenset[str] = frozenset(),
        review_after: frozenset[str] = frozenset(),
    ) -> None:
        """review_before / review_after: nodes before or after which the run waits for a
        person (``review_run``, ``router approve`` / ``router reject``)."""
        self.store, self.graph = store, graph
        unknown = sorted((review_before | review_after) - set(graph.nodes))
        if unknown:
            raise ConfigError(f"graph {graph.name!r} has no nodes {unknown} to review")
        self.review_before, self.review_after = review_before, review_after
        self.limits = limits or Limits()
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.owner = owner or RandomIds().new_id("engine")
        self.lease_ttl_s = lease_ttl_s
        self.cipher = cipher

    async def start(self, state: Mapping[str, Any], *, principal: Principal, limits: Limits | None = None,
                    run_id: str | None = None, parent_run_id: str = "") -> GraphResult:
        try:
            initial = _encoder.encode(dict(state)).decode()
        except TypeError as exc:
            raise ConfigError(f"the graph's initial state is not JSON-encodable: {exc}") from exc
        run_id = run_id or self.ids.new_id("run")
        if await self.store.read(run_id):
            raise ConfigError(f"run {run_id!r} already exists; resume it instead")
        run = _GraphRun(run_id, GraphState(), Chain(run_id), leased=False)  # its first batch takes the lease
        self._add(run, GraphStarted(
            at=self.clock.now_us(), graph=self.graph.name, definition=self.graph.definition, state=initial,
            principal=principal, limits=limits or self.limits, first=self.graph.first_tasks(),
            parent_run_id=parent_run_id,
        ))
        return await self._drive(run)

    async def resume(self, run_id: str) -> GraphResult:
        """Continue a graph run from its log: the step it was in runs again."""
        await self.store.acquire_lease(run_id, self.owner, self.lease_ttl_s)
        try:
            events, chain = await self._load(run_id)
            state = fold_graph(self.graph, events)
            if state.definition != self.graph.definition:
                raise DefinitionChanged(run_id, state.definition, self.graph.definition)
        except BaseException:
            await self.store.release_lease(run_id, self.owner)
            raise
        run = _GraphRun(run_id, state, chain, leased=True)
        if not state.terminal and state.phase != "awaiting_review":
            self._add(run, RunResumed(at=self.clock.now_us(), owner=self.owner))
        return await self._drive(run)

    async def replay(self, run_id: str) -> ReplayReport:
        """Fold the run again and route every step again with this graph; node results come
        from the log. Reports the first step whose routing differs."""
        events, _ = await self._load(run_id)
        state = GraphState()
        for seq, event in enumerate(events):
            if isinstance(event, StepRouted) and state.phase == "running":
                updates = {(f.node, f.item): msgspec.json.decode(f.update) for f in state.results}
                merged = self.graph.merge(state.state, [updates[(t.node, t.item)] for t in state.tasks
                                                        if (t.node, t.item) in updates])
                got = StepRouted(at=event.at, step=state.step, next=self.graph.route_after(state.tasks, merged))
                if encode_event(got) != encode_event(event):
                    return ReplayReport(run_id, seq, Divergence(seq, encode_event(event).decode(),
                                                                encode_event(got).decode()))
            state = apply_graph(self.graph, state, event)
        return ReplayReport(run_id, len(events))

    async def _load(self, run_id: str) -> tuple[list[Event], Chain]:
        stored = await self.store.read(run_id)
        if not stored:
            raise RunNotFound(run_id)
        verify(stored)
        return decode_run(stored, self.cipher), Chain.after(run_id, stored)

    def _add(self, run: _GraphRun, event: Event) -> None:
        run.state = apply_graph(self.graph, run.state, event)
        run.pending.append(event)

    async def _flush(self, run: _GraphRun, *, last: bool = False) -> None:
        """Commit the pending events; the lease rides along, taken with the run's first
        batch and released with its last (``last``)."""
        if run.pending:
            lease = (
                LeaseChange(self.owner, self.lease_ttl_s) if not run.leased
                else LeaseChange(self.owner) if last else None
            )
            sealed = run.chain.seal(run.pending, sealer(self.cipher))
            await self.store.append(sealed, lease=lease)
            if lease is not None:
                run.leased = lease.ttl_s is not None
            run.chain.advance(sealed)
            run.pending.clear()

    async def _drive(self, run: _GraphRun) -> GraphResult:
        try:
            try:
                while not run.state.terminal:
                    exceeded = self._check_limits(run.state)
                    if exceeded is not None:
                        self._add(run, exceeded)
                        break
                    if run.state.phase == "awaiting_review":
                        break
                    review = self._review(run.state)
                    if review is not None:
                        self._add(run, review)
                        break
                    await self._flush(run)  # the step to run is committed before its nodes run
                    for event in await self._step(run.state, run.run_id):
                        self._add(run, event)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    self._add(run, RunCancelled(at=self.clock.now_us(), reason="the task driving the run was cancelled"))
                    await self._flush(run)
                raise
            await self._flush(run, last=True)
        finally:
            if run.leased:
                with anyio.CancelScope(shield=True):
                    await self.store.release_lease(run.run_id, self.owner)
        s = run.state
        return GraphResult(run.run_id, s.phase, s.state, s.step, s.reason)

    def _review(self, s: GraphState) -> ReviewRequested | None:
        """Before a step: wait for a person if the last step ran a node to review after, or
        this one runs a node to review before (each asked once per step)."""
        if s.reviewed == "before_node":
            return None
        if s.step and s.reviewed != "after_node":
            done = sorted(set(s.ran) & self.review_after)
            if done:
                return ReviewRequested(at=s.last_at, rule="after_node", call_ids=tuple(done),
                                       reason=f"the results of {', '.join(done)} wait for a reviewer")
        coming = sorted({t.node for t in s.tasks} & self.review_before)
        if coming:
            return ReviewRequested(at=s.last_at, rule="before_node", call_ids=tuple(coming),
                                   reason=f"{', '.join(coming)} need a reviewer's approval")
        return None

    def _check_limits(self, s: GraphState) -> LimitExceeded | None:
        limits, at = s.limits, s.last_at
        if s.step >= limits.max_steps:
            return LimitExceeded(at=at, limit="max_steps", value=s.step, ceiling=limits.max_steps)
        if limits.deadline_s is not None and (s.last_at - s.started_at) / 1e6 > limits.deadline_s:
            return LimitExceeded(at=at, limit="deadline", value=(s.last_at - s.started_at) / 1e6,
                                 ceiling=limits.deadline_s)
        return None

    async def _step(self, s: GraphState, run_id: str) -> list[Event]:
        """Run the step's tasks concurrently; record results in task order, then route."""
        results: list[Event | None] = [None] * len(s.tasks)

        async def one(i: int) -> None:
            results[i] = await self._run_task(s, s.tasks[i], run_id)

        if len(s.tasks) == 1:
            await one(0)
        else:
            async with anyio.create_task_group() as tg:
                for i in range(len(s.tasks)):
                    tg.start_soon(one, i)
        events = [r for r in results if r is not None]
        if any(isinstance(e, NodeFailed) for e in events):
            return [next(e for e in events if isinstance(e, NodeFailed))]
        finished = [e for e in events if isinstance(e, NodeFinished)]
        merged = self.graph.merge(s.state, [msgspec.json.decode(f.update) for f in finished])
        try:
            nxt = self.graph.route_after(s.tasks, merged)
        except Exception as exc:  # a route function that raises or picks an unknown node
            return [*finished, RunFailed(at=self.clock.now_us(), code="route_error", reason=str(exc))]
        return [*finished, StepRouted(at=self.clock.now_us(), step=s.step, next=nxt)]

    async def _run_task(self, s: GraphState, task: Task, run_id: str) -> Event:
        node = self.graph.nodes[task.node]
        context = NodeContext(run_id, s.step, task.node, task.item, s.principal)
        view = dict(s.state)
        if task.item:
            view["item"] = msgspec.json.decode(task.item)
        timeout = node.timeout_s if node.timeout_s is not None else s.limits.tool_timeout_s
        begin = self.clock.now_us()
        errors: list[str] = []
        timeouts = 0
        for attempt in range(1, node.retry.attempts + 1):
            if attempt > 1:
                await anyio.sleep(node.retry.delay_before(attempt))
            try:
                with anyio.fail_after(timeout if timeout is not None else float("inf")):
                    update = await (node.fn(view, context) if node.takes_context else node.fn(view))
                encoded = _encoder.encode(dict(update)).decode()
            except TimeoutError:
                timeouts += 1
                errors.append(f"timed out after {timeout:g} s")
                continue
            except Exception as exc:  # a node's failure is recorded; the run fails with it
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            now = self.clock.now_us()
            return NodeFinished(at=now, step=s.step, node=task.node, item=task.item, update=encoded,
                                attempts=attempt, latency_us=now - begin)
        now = self.clock.now_us()
        return NodeFailed(at=now, step=s.step, node=task.node, item=task.item, error="; ".join(errors),
                          timed_out=timeouts == node.retry.attempts, attempts=node.retry.attempts,
                          latency_us=now - begin)


def subgraph(
    engine: GraphEngine,
    *,
    inputs: Callable[[dict[str, Any]], Mapping[str, Any]],
    outputs: Callable[[dict[str, Any]], Mapping[str, Any]],
) -> Callable[[dict[str, Any], NodeContext], Awaitable[Mapping[str, Any]]]:
    """A node that runs another graph as a child run (``<run>/<node>.<step>``): ``inputs``
    makes the child's initial state from the parent's, ``outputs`` the parent's update from
    the child's final state. A resumed parent resumes the same child."""

    async def node(state: dict[str, Any], ctx: NodeContext) -> Mapping[str, Any]:
        child_id = f"{ctx.run_id}/{ctx.key}"
        if await engine.store.read(child_id):
            result = await engine.resume(child_id)
        else:
            result = await engine.start(inputs(state), principal=ctx.principal, run_id=child_id,
                                        parent_run_id=ctx.run_id)
        if result.phase != "done":
            raise RuntimeError(f"the subgraph {engine.graph.name!r} ended {result.phase}: {result.reason}")
        return outputs(result.state)

    return node
