"""The graph engine: drives graph runs on the spine.

It folds the run's events (``core.graph_fsm``), asks ``next_graph_effect`` what to do,
runs a step's tasks concurrently through the one attempt loop, and records their results
through the run's one log writer. One append per step: the step's node results and the
routing decision go in one batch, committed before the next step's nodes run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, final

import anyio
import msgspec

from ..core.definition import changed_parts, digest_parts, hash_parts, recorded_parts
from ..core.effects import Record
from ..core.events import (
    Event,
    GraphStarted,
    LimitExceeded,
    Limits,
    NodeFailed,
    NodeFinished,
    Principal,
    RedactionPolicy,
    ReviewDecided,
    RunCancelled,
    RunFailed,
    RunForked,
    RunMigrated,
    RunParked,
    RunResumed,
    StepRouted,
    Task,
    Usage,
    spent,
)
from ..core.graph_fsm import (
    GraphState,
    RouteStep,
    RunStep,
    apply_graph,
    fold_graph,
    next_graph_effect,
)
from ..core.limits import Budget, Meter
from ..core.protocols import Store
from ..core.redaction import Redaction
from ..core.replay import Divergence, ReplayReport
from ..errors import ConfigError, DefinitionChanged
from ..run.attempt import attempt, deadline_passed, time_left
from ..run.children import start_child
from ..run.log import RunLog, open_log, plaintext_of
from ..run.runtime import Runtime, bind
from .definition import CompiledGraph, NodeContext

__all__ = ["GraphEngine", "GraphResult", "subgraph"]

_encoder = msgspec.json.Encoder(order="deterministic")
# Events that record what the world did, accepted as recorded by a replay.
_THE_WORLDS = (
    NodeFinished,
    NodeFailed,
    RunResumed,
    RunParked,
    RunMigrated,
    RunForked,
    RunCancelled,
    ReviewDecided,
)


class GraphResult(msgspec.Struct, frozen=True):
    run_id: str
    phase: str
    state: dict[str, Any]
    steps: int
    reason: str = ""
    usage: Usage = Usage()  # what the run's child runs spent
    cost_usd: float = 0.0


class _GraphRun:
    __slots__ = ("run_id", "state", "log")

    def __init__(self, log: RunLog, state: GraphState) -> None:
        self.run_id, self.state, self.log = log.run_id, state, log


@final
class GraphEngine:
    """A compiled graph, its limits, redaction and review points, and the runtime its runs
    execute on. Starts, resumes and replays its runs."""

    def __init__(
        self,
        store_or_runtime: Store | Runtime,
        graph: CompiledGraph,
        *,
        limits: Limits | None = None,
        redaction: Redaction | None = None,
        review_before: frozenset[str] = frozenset(),
        review_after: frozenset[str] = frozenset(),
    ) -> None:
        """review_before / review_after: nodes before or after which the run waits for a
        person (``review_graph_run``, ``router approve`` / ``router reject``)."""
        self._bind(Runtime.of(store_or_runtime))
        self.graph = graph
        unknown = sorted((review_before | review_after) - set(graph.nodes))
        if unknown:
            raise ConfigError(f"graph {graph.name!r} has no nodes {unknown} to review")
        self.review_before, self.review_after = frozenset(review_before), frozenset(review_after)
        self.limits = limits or Limits()
        self.redaction = redaction or Redaction()
        review = {"before": sorted(self.review_before), "after": sorted(self.review_after)}
        self.parts = {
            **graph.parts,
            **digest_parts(redaction=self.redaction.describe(), review=review),
        }
        self._elsewhere: GraphEngine | None = None  # this GraphEngine on the runtime last asked for
        self.definition = hash_parts(self.parts)

    def on(self, runtime: Runtime) -> GraphEngine:
        """This graph on another runtime (a child run executes on its parent's)."""
        return bind(self, runtime)

    def _bind(self, runtime: Runtime) -> None:
        self.runtime, self.store = runtime, runtime.store

    async def start(
        self,
        state: Mapping[str, Any],
        *,
        principal: Principal | dict[str, Any],
        limits: Limits | None = None,
        run_id: str | None = None,
        parent_run_id: str = "",
        redaction: Redaction | None = None,
        drive: bool = True,
    ) -> GraphResult:
        """Start a graph run from ``state`` and drive it until it ends or waits for a
        reviewer (``drive`` False: record its start only, for a ``Worker`` to advance).
        redaction: a policy besides the engine's own (a parent run's).
        Raises ConfigError on a state that is not JSON-encodable, a principal that is not
        one, or a run id that is taken."""
        try:
            initial = _encoder.encode(dict(state)).decode()
            if not isinstance(principal, Principal):
                principal = msgspec.convert(principal, Principal)
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            raise ConfigError(f"cannot start a graph run: {exc}") from exc
        runtime = self.runtime
        run_id = run_id or runtime.ids.new_id("run")
        if await self.store.read(run_id):
            raise ConfigError(f"run {run_id!r} already exists; resume it instead")
        policy = self.redaction | redaction if redaction else self.redaction
        run = _GraphRun(
            RunLog(runtime, run_id, policy), GraphState()
        )  # its first batch takes the lease
        self._add(
            run,
            GraphStarted(
                at=runtime.clock.now_us(),
                graph=self.graph.name,
                definition=self.definition,
                state=initial,
                principal=principal,
                limits=limits or self.limits,
                first=self.graph.first_tasks(),
                parent_run_id=parent_run_id,
                parts=self.parts,
                redaction=RedactionPolicy(**policy.describe()) if policy else RedactionPolicy(),
            ),
        )
        if not drive:  # recorded, its lease given back: a Worker advances it
            await run.log.close(run.state)
            return self._result(run)
        return await self._drive(run)

    async def resume(self, run_id: str, *, migration: str | None = None) -> GraphResult:
        """Continue a graph run from its log: the step it was in runs again.

        Raises DefinitionChanged, naming what changed (a node, a route, the shape), if the
        run was started under another definition, unless ``migration`` names the change,
        which the log records. Raises ConfigError if the run is not a graph run."""
        events, log = await open_log(self.runtime, run_id, self.redaction, kind=GraphStarted)
        try:
            run = _GraphRun(log, fold_graph(self.graph.merge, events))
            state = run.state
            if state.definition != self.definition and not state.terminal:
                if migration is None:
                    changed = changed_parts(recorded_parts(events), self.parts)
                    raise DefinitionChanged(run_id, state.definition, self.definition, changed)
                self._add(
                    run,
                    RunMigrated(
                        at=self.runtime.clock.now_us(),
                        migration=migration,
                        from_definition=state.definition,
                        to_definition=self.definition,
                        parts=self.parts,
                    ),
                )
        except BaseException:
            await log.release()
            raise
        if not state.terminal and state.phase != "awaiting_review":
            self._add(run, RunResumed(at=self.runtime.clock.now_us(), owner=self.runtime.owner))
        return await self._drive(run)

    async def replay(self, run_id: str) -> ReplayReport:
        """Fold the run again and decide every step again with this graph (routing, limits,
        reviews, a failed node ending the run); node results and people's decisions come
        from the log. Events are compared in their stored form (redacted), timestamps aside.
        Reports the first event that differs."""
        events, log = await open_log(
            self.runtime, run_id, self.redaction, lease=False, kind=GraphStarted
        )
        stored = plaintext_of(log.redaction)
        state = GraphState()
        for seq, event in enumerate(events):
            got = self._redecide(state, event)
            if got is not None:
                expected = stored(event)
                produced = (
                    stored(msgspec.structs.replace(got, at=event.at))
                    if not isinstance(got, str)
                    else got.encode()
                )
                if produced != expected:
                    return ReplayReport(
                        run_id, seq, Divergence(seq, expected.decode(), produced.decode())
                    )
            state = apply_graph(self.graph.merge, state, event)
        return ReplayReport(run_id, len(events))

    def _redecide(self, s: GraphState, event: Event) -> Event | str | None:
        """What this graph decides where ``event`` was recorded (a description when it would
        run the step instead), or None where the event is the world's: a node's result, a
        deadline that passed while nodes ran, a person's decision, a resume or a fork."""
        if s.phase != "running" or isinstance(event, _THE_WORLDS):
            return None
        effect = next_graph_effect(s, self.review_before, self.review_after)
        if isinstance(effect, Record):
            return effect.event
        if isinstance(effect, RouteStep):
            try:
                return StepRouted(at=event.at, step=s.step, next=self._route(s))
            except Exception as exc:  # a route function that raises or picks an unknown node
                return RunFailed(at=event.at, code="route_error", reason=str(exc))
        if isinstance(event, LimitExceeded) and event.limit in ("deadline", "expires_at"):
            return None
        return f"(runs step {s.step}: {', '.join(t.node for t in s.tasks)})"

    def _route(self, s: GraphState) -> tuple[Task, ...]:
        """The next tasks after the step whose results ``s`` holds (the route functions may
        raise)."""
        updates = {
            (f.node, f.item): msgspec.json.decode(f.update)
            for f in s.results
            if isinstance(f, NodeFinished)
        }
        merged = self.graph.merge(
            s.state, [updates[(t.node, t.item)] for t in s.tasks if (t.node, t.item) in updates]
        )
        return self.graph.route_after(s.tasks, merged)

    def _add(self, run: _GraphRun, event: Event) -> None:
        run.state = apply_graph(self.graph.merge, run.state, event)
        run.log.pending.append(event)

    async def _drive(self, run: _GraphRun) -> GraphResult:
        try:
            await self._advance(run)
        finally:
            await run.log.release()
        return self._result(run)

    @staticmethod
    def _result(run: _GraphRun) -> GraphResult:
        s = run.state
        return GraphResult(
            run.run_id, s.phase, s.state, s.step, s.reason, s.usage, s.cost_nusd / 1e9
        )

    async def _advance(self, run: _GraphRun) -> None:
        log, clock = run.log, self.runtime.clock
        try:
            while True:
                effect = next_graph_effect(run.state, self.review_before, self.review_after)
                if isinstance(effect, RunStep):
                    await log.flush()  # the step to run is committed before its nodes run
                    for event in await self._step_within_deadline(run, effect.tasks):
                        self._add(run, event)
                elif isinstance(effect, RouteStep):
                    try:
                        nxt = self._route(run.state)
                    except (
                        Exception
                    ) as exc:  # a route function that raises or picks an unknown node
                        self._add(
                            run, RunFailed(at=clock.now_us(), code="route_error", reason=str(exc))
                        )
                        continue
                    self._add(run, StepRouted(at=clock.now_us(), step=run.state.step, next=nxt))
                elif isinstance(effect, Record):
                    self._add(run, effect.event)
                else:  # Stop, AwaitReview or Idle
                    await log.close(run.state)
                    return
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if not run.state.terminal and not log.handed_over:
                    self._add(
                        run,
                        RunCancelled(
                            at=clock.now_us(), reason="the task driving the run was cancelled"
                        ),
                    )
                await log.close(run.state)
            raise

    async def _step_within_deadline(self, run: _GraphRun, tasks: tuple[Task, ...]) -> list[Event]:
        """The step's results; if the run's deadline passes first, the step is cut short
        (its nodes cancelled, their child runs with them) and the deadline is recorded."""
        left = time_left(self.runtime.clock, run.state)
        if left == float("inf"):
            return await self._step(run, tasks)
        with anyio.move_on_after(left) as scope:
            return await self._step(run, tasks)
        assert scope.cancelled_caught
        return [deadline_passed(self.runtime.clock, run.state)]

    async def _step(self, run: _GraphRun, tasks: tuple[Task, ...]) -> list[Event]:
        """Run these tasks of the step concurrently; their results come back in task order.
        The tasks share what the run has left, evenly."""
        s = run.state
        budget = Budget.left(s, len(tasks))
        results: list[Event | None] = [None] * len(tasks)

        async def one(i: int) -> None:
            results[i] = await self._run_task(run, s, tasks[i], budget)

        if len(tasks) == 1:
            await one(0)
        else:
            async with anyio.create_task_group() as tg:
                for i in range(len(tasks)):
                    tg.start_soon(one, i)
        return [r for r in results if r is not None]

    def _view(
        self, run: _GraphRun, s: GraphState, task: Task, budget: Budget
    ) -> tuple[Any, NodeContext | None]:
        """What a task's node is given: the state (with its item), and its context if it
        takes one (where it runs, its share of the budget, the meter of its children)."""
        view = dict(s.state)
        if task.item:
            view["item"] = msgspec.json.decode(task.item)
        if not self.graph.nodes[task.node].takes_context:
            return view, None
        log = run.log
        context = NodeContext(
            run.run_id,
            s.step,
            task.node,
            task.item,
            s.principal,
            budget=budget,
            meter=Meter(),
            redaction=log.redaction or None,
            runtime=log.runtime,
        )
        return view, context

    async def _run_task(self, run: _GraphRun, s: GraphState, task: Task, budget: Budget) -> Event:
        node = self.graph.nodes[task.node]
        view, context = self._view(run, s, task, budget)
        timeout = node.timeout_s if node.timeout_s is not None else s.limits.tool_timeout_s
        clock = self.runtime.clock
        begin = clock.now_us()
        if context is None:
            outcome = await attempt(node.fn, node.retry, timeout, view)
        else:
            outcome = await attempt(node.fn, node.retry, timeout, view, context)
        error, update = outcome.error, ""
        if outcome.ok:
            try:
                update = _encoder.encode(dict(outcome.value)).decode()
            except (TypeError, ValueError) as exc:  # the same on every attempt: not retried
                error = f"the update is not a JSON-encodable mapping: {exc}"
        now = clock.now_us()
        meter = context.meter if context is not None else None
        spend: dict[str, Any] = (
            {}
            if meter is None or meter.empty
            else {"usage": spent(meter.usage), "cost_nusd": meter.cost_nusd}
        )
        if not error:
            return NodeFinished(
                at=now,
                step=s.step,
                node=task.node,
                item=task.item,
                update=update,
                attempts=outcome.attempts,
                latency_us=now - begin,
                **spend,
            )
        return NodeFailed(
            at=now,
            step=s.step,
            node=task.node,
            item=task.item,
            error=error,
            timed_out=outcome.timed_out,
            attempts=outcome.attempts,
            latency_us=now - begin,
            **spend,
        )


def subgraph(
    engine: GraphEngine,
    *,
    inputs: Callable[[dict[str, Any]], Mapping[str, Any]],
    outputs: Callable[[dict[str, Any]], Mapping[str, Any]],
) -> Callable[[dict[str, Any], NodeContext], Awaitable[Mapping[str, Any]]]:
    """A node that runs another graph as a child run (``<run>/<node>.<step>``) on the
    parent's runtime: ``inputs`` makes the child's initial state from the parent's,
    ``outputs`` the parent's update from the child's final state. The child's limits are
    lowered to what the parent has left, it inherits the parent's redaction, what it spent
    counts against the parent (even when it is cancelled), and a child that stops to wait
    for a review is ended with its step. A resumed parent resumes the same child."""

    async def node(state: dict[str, Any], ctx: NodeContext) -> Mapping[str, Any]:
        result: GraphResult = await start_child(
            engine, f"{ctx.run_id}/{ctx.key}", inputs(state), ctx
        )
        if result.phase != "done":
            raise RuntimeError(
                f"the subgraph {engine.graph.name!r} ended {result.phase}: {result.reason}"
            )
        return outputs(result.state)

    return node
