"""The agent engine: drives an agent's runs on the spine.

It folds the run's events, asks ``fsm.next_effect`` what to do, performs that effect
(call the model, run tools) and records the outcome through the run's one log writer
(``run.log``). Events are appended in one batch per side effect: a batch is committed
before the model is called and before a tool that is not idempotent runs, so a step costs
one store round trip, two when it runs a side-effecting tool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, final

import anyio
import msgspec

from ..definition import changed_parts, definition_parts, hash_parts
from ..errors import ConfigError, DefinitionChanged, ModelError
from ..events import (
    Event,
    LimitExceeded,
    Limits,
    Message,
    ModelResponded,
    ModelRouted,
    Principal,
    RedactionPolicy,
    ReviewRules,
    RouteAttempt,
    RunCancelled,
    RunFailed,
    RunMigrated,
    RunStarted,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    Usage,
    encode_event,
    spent,
)
from ..fsm import INTERRUPTED, CallModel, DecideCalls, Phase, Record, RunState, RunTools, apply, fold, next_effect, resume_events
from ..limits import Budget, Meter, PriceTable
from ..protocols import Model, ModelTurn, Store, current_run_id
from ..redaction import Redaction
from ..replay import ReplayReport, replay_events
from ..tools import Retry, Tool, ToolContext, ToolOutput, Tools, encode_result, record_calls
from ..transcript import Transcript
from .attempt import attempt
from .log import RunLog, open_log
from .runtime import Runtime

__all__ = ["Engine", "RunResult"]


class RunResult(msgspec.Struct, frozen=True):
    """Where a run stands when ``start`` or ``resume`` returns."""

    run_id: str
    phase: Phase
    output: str
    reason: str
    steps: int
    tool_calls: int
    usage: Usage
    cost_usd: float
    interrupted: tuple[str, ...] = ()  # calls waiting for a reviewer's decision
    review: str = ""  # in awaiting_review: the rule the run waits on

    @classmethod
    def of(cls, run_id: str, state: RunState) -> RunResult:
        return cls(
            run_id=run_id, phase=state.phase, output=state.output, reason=state.reason,
            steps=state.steps, tool_calls=state.tool_calls, usage=state.usage,
            cost_usd=state.cost_nusd / 1e9,
            interrupted=(
                tuple([c.call.id for c in state.calls if c.status == "interrupted"])
                if state.phase is INTERRUPTED else ()
            ),
            review=state.pending_review,
        )


class _Run:
    """One run being advanced: its folded state, transcript and log writer."""

    __slots__ = ("run_id", "state", "transcript", "log", "args")

    def __init__(self, log: RunLog, state: RunState, transcript: Transcript) -> None:
        self.run_id = log.run_id
        self.log = log
        self.state = state
        self.transcript = transcript
        self.args: dict[str, Any] = {}  # decoded arguments of calls decided in this process

    def add(self, event: Event) -> None:
        self.state = apply(self.state, event)
        self.transcript.apply(event)
        self.log.pending.append(event)


@final
class Engine:
    """An agent (a model, its tools, its limits, prices, redaction and review rules) and the
    runtime its runs execute on.

    store_or_runtime: a Store (a default Runtime on it) or a Runtime, which holds the clock,
    ids, this process's lease owner, the cipher and the observers. ``agent`` names the
    agent in every run it starts (and in exports and traces).
    """

    def __init__(
        self,
        store_or_runtime: Store | Runtime,
        model: Model,
        tools: Tools,
        *,
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        model_retry: Retry | None = None,
        redaction: Redaction | None = None,
        agent: str = "",
        review: ReviewRules | None = None,
        output_check: Callable[[str], str | None] | None = None,
    ) -> None:
        self.runtime = Runtime.of(store_or_runtime)
        self.store = self.runtime.store
        self.model = model
        self.tools = tools
        self.limits = limits or Limits()
        self.prices = prices or PriceTable()
        self.model_retry = model_retry or Retry(attempts=3, base_delay_s=0.2)
        self.agent = agent
        self.output_check = output_check
        check_name = getattr(output_check, "__name__", "check") if output_check is not None else ""
        self.review = msgspec.structs.replace(review or ReviewRules(), output_check=check_name)
        self.redaction = redaction or Redaction()
        self.parts = definition_parts(model.name, tools, self.prices, self.redaction, self.review, output_check)
        self.definition = hash_parts(self.parts)

    async def start(
        self,
        messages: str | Sequence[Message | dict[str, Any]],
        *,
        principal: Principal | dict[str, Any],
        limits: Limits | None = None,
        run_id: str | None = None,
        parent_run_id: str = "",
        redaction: Redaction | None = None,
    ) -> RunResult:
        """Start a run and drive it until it ends or waits for a reviewer.

        parent_run_id: for a child agent, the run that spawned it (recorded in its log).
        redaction: a policy to apply besides the agent's own (a child run's parent's).
        Raises ConfigError on bad input or a run id that is taken."""
        try:
            if isinstance(messages, str):
                opening: tuple[Message, ...] = (Message(role="user", content=messages),)
            else:
                opening = msgspec.convert(list(messages), tuple[Message, ...])
            if not isinstance(principal, Principal):
                principal = msgspec.convert(principal, Principal)
        except (msgspec.ValidationError, TypeError) as exc:
            raise ConfigError(f"cannot start a run: {exc}") from exc
        runtime = self.runtime
        if run_id is None:
            run_id = runtime.ids.new_id("run")
        elif await self.store.read(run_id):  # a chosen id may be taken; a generated one is not
            raise ConfigError(f"run {run_id!r} already exists; resume it instead")
        policy = self.redaction | redaction if redaction else self.redaction
        run = _Run(RunLog(runtime, run_id, policy), RunState(), Transcript())  # its first batch takes the lease
        run.add(RunStarted(
            at=runtime.clock.now_us(), messages=opening, principal=principal,
            limits=limits or self.limits, model=self.model.name, tools=self.tools.names,
            definition=self.definition, redaction=RedactionPolicy(**policy.describe()) if policy else RedactionPolicy(),
            agent=self.agent, review=self.review, parent_run_id=parent_run_id, parts=self.parts,
        ))
        return await self._drive(run)

    async def resume(self, run_id: str, *, migration: str | None = None) -> RunResult:
        """Continue an unfinished run from its log alone.

        A finished run, or one still waiting for a decision, is returned as it stands.
        Calls started before a crash with no result run again if their tool is
        idempotent; otherwise the run stops, interrupted, until ``resolve_call``.

        Raises DefinitionChanged, naming what changed, if the run was started under another
        definition (tools and their code, schemas, policy, prices, model), unless
        ``migration`` names the change: the log then records it and the run continues
        under this engine's definition. Raises LeaseHeld if another process holds the run.
        """
        events, log = await open_log(self.runtime, run_id, self.redaction)
        try:
            run = _Run(log, fold(events), Transcript(events))
            state = run.state
            if state.terminal or state.phase in (Phase.INTERRUPTED, Phase.AWAITING_REVIEW):
                await log.release()
                return RunResult.of(run_id, state)
            now = self.runtime.clock.now_us()
            if state.definition != self.definition:
                first = events[0]
                changed = changed_parts(first.parts if isinstance(first, RunStarted) else {}, self.parts)
                if migration is None:
                    raise DefinitionChanged(run_id, state.definition, self.definition, changed)
                run.add(RunMigrated(at=now, migration=migration, from_definition=state.definition,
                                    to_definition=self.definition))
        except BaseException:
            await log.release()
            raise
        for event in resume_events(state, now, self.runtime.owner):
            run.add(event)
        return await self._drive(run)

    async def replay(self, run_id: str) -> ReplayReport:
        """Drive the run again from its log with this engine's tools, policy and prices,
        taking the model's answers and the tools' results from the log, and compare every
        event router decides with the recorded one (timestamps aside)."""
        events, log = await open_log(self.runtime, run_id, self.redaction, lease=False)
        redaction = log.redaction
        plaintext = (lambda e: redaction.apply(encode_event(e))) if redaction else encode_event
        return replay_events(run_id, events, self.tools, self.prices, plaintext)

    async def _drive(self, run: _Run) -> RunResult:
        """Advance the run until it stops, then release its lease, whatever happened."""
        token = current_run_id.set(run.run_id)  # model adapters tag their stream deltas with it
        try:
            return await self._advance(run)
        finally:
            current_run_id.reset(token)
            await run.log.release()

    async def _advance(self, run: _Run) -> RunResult:
        log = run.log
        try:
            while True:
                effect = next_effect(run.state)
                kind = type(effect)
                if kind is CallModel:
                    await log.flush()
                    if run.state.limits.deadline_s is None:
                        run.add(await self._ask_model(run))
                    else:
                        run.add(await self._ask_model_within_deadline(run))
                elif kind is DecideCalls:
                    self._decide(run, effect)  # type: ignore[arg-type]
                elif kind is RunTools:
                    calls = effect.calls  # type: ignore[attr-defined]
                    inline = self._inline_now(run, calls)
                    if inline is not None:
                        run.add(self._run_inline(run, inline, calls[0]))  # nothing to wait for, nothing to await
                        continue
                    if not all(s.idempotent for s in calls):
                        await log.flush()
                    for event in await self._run_tools(run, calls):
                        run.add(event)
                elif kind is Record:
                    run.add(effect.event)  # type: ignore[attr-defined]
                else:  # Finish, AwaitDecision or Idle: the run stops here
                    await log.flush(last=True)
                    return RunResult.of(run.run_id, run.state)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if not run.state.terminal:
                    run.add(RunCancelled(at=self.runtime.clock.now_us(), reason="the task driving the run was cancelled"))
                await log.flush(last=True)
            raise

    def _decide(self, run: _Run, effect: DecideCalls) -> None:
        principal, now = run.state.principal, self.runtime.clock.now_us()
        for call in effect.calls:
            event, args = self.tools.decide(call, principal, now)
            if args is not None:
                run.args[call.id] = args
            run.add(event)

    def _remaining(self, state: RunState) -> float:
        deadline = state.limits.deadline_s
        if deadline is None:
            return float("inf")
        return deadline - (self.runtime.clock.now_us() - state.started_at) / 1e6

    def _deadline_passed(self, state: RunState) -> LimitExceeded:
        now = self.runtime.clock.now_us()
        return LimitExceeded(
            at=now, limit="deadline", value=(now - state.started_at) / 1e6, ceiling=state.limits.deadline_s or 0,
            detail="the deadline passed while router waited",
        )

    async def _ask_model_within_deadline(self, run: _Run) -> Event:
        with anyio.move_on_after(self._remaining(run.state)):
            return await self._ask_model(run)
        return self._deadline_passed(run.state)

    async def _ask_model(self, run: _Run) -> Event:
        clock = self.runtime.clock
        begin = clock.now_us()
        error = ""
        for n in range(1, self.model_retry.attempts + 1):
            if n > 1:
                await anyio.sleep(self.model_retry.delay_before(n))
            try:
                turn = await self.model.respond(run.transcript.messages, self.tools.schemas)
                if not isinstance(turn, ModelTurn):
                    raise TypeError(f"the model returned {type(turn).__name__}, not ModelTurn")
                if turn.route:
                    self._routed(run, next((a.model for a in turn.route if a.outcome == "answered"), ""), turn.route)
                return self._responded(run.state, turn, begin)
            except ModelError as exc:  # a provider adapter has spent its own retries
                error = f"{type(exc).__name__}: {exc}"
                if exc.route:
                    self._routed(run, "", exc.route)  # type: ignore[arg-type]
                break
            except Exception as exc:  # recorded as run_failed once the retries are spent
                error = f"{type(exc).__name__}: {exc}"
        return RunFailed(
            at=clock.now_us(), code="model_error",
            reason=f"the model failed after {n} attempt(s) here; last error: {error}",
        )

    def _routed(self, run: _Run, chosen: str, route: tuple[RouteAttempt, ...]) -> None:
        run.add(ModelRouted(at=self.runtime.clock.now_us(), step=run.state.steps + 1, chosen=chosen, attempts=route))

    def _responded(self, state: RunState, turn: ModelTurn, begin: int) -> ModelResponded:
        now = self.runtime.clock.now_us()
        model = turn.model or self.model.name
        step = state.steps + 1
        held = ""
        if not turn.tool_calls and self.output_check is not None:
            held = self.output_check(turn.text) or ""
        return ModelResponded(
            at=now, step=step, text=turn.text, tool_calls=record_calls(step, turn.tool_calls),
            usage=spent(turn.usage), cost_nusd=self.prices.cost_nusd(model, turn.usage), model=model,
            latency_us=now - begin, held=held, served_model=turn.served_model if turn.served_model != model else "",
        )

    async def _run_tools(self, run: _Run, calls: tuple[ToolStarted, ...]) -> list[Event]:
        """Run the calls of one turn; results come back in call order.

        Async and threaded tools run concurrently in a task group. Inline tools run on the
        loop without yielding, so running them one after another is the same as running
        them concurrently, without a task per call.
        """
        remaining = self._remaining(run.state)
        if len(calls) == 1 and remaining == float("inf"):
            return [await self._run_tool(run, calls[0], 1)]
        results: list[Event | None] = [None] * len(calls)
        waiting = [i for i, c in enumerate(calls) if not self._runs_inline(c.tool)]

        async def one(i: int) -> None:
            results[i] = await self._run_tool(run, calls[i], len(calls))

        async def all_calls() -> None:
            for i in range(len(calls)):
                if i not in waiting:
                    await one(i)
            if len(waiting) == 1:
                await one(waiting[0])
            elif waiting:
                async with anyio.create_task_group() as tg:
                    for i in waiting:
                        tg.start_soon(one, i)

        if remaining == float("inf"):
            await all_calls()
            return results  # type: ignore[return-value]
        with anyio.move_on_after(remaining) as scope:
            await all_calls()
        done = [r for r in results if r is not None]
        if scope.cancelled_caught:
            done.append(self._deadline_passed(run.state))
        return done

    def _runs_inline(self, name: str) -> bool:
        t = self.tools[name]
        return t.inline and not t.is_async

    def _inline_now(self, run: _Run, calls: tuple[ToolStarted, ...]) -> Tool | None:
        """The tool, if the turn is one call that runs once, inline, before the next commit
        (idempotent, or nothing is pending) and with no deadline to race; else None."""
        if len(calls) != 1:
            return None
        t = self.tools[calls[0].tool]
        if t.inline_once and (calls[0].idempotent or not run.log.pending) and run.state.limits.deadline_s is None:
            return t
        return None

    def _run_inline(self, run: _Run, t: Tool, started: ToolStarted) -> Event:
        """One attempt of an inline sync tool, on the loop."""
        args, context = self._arguments(run, t, started, 1)
        clock = self.runtime.clock
        begin = clock.now_us()  # after the arguments: the tool's time is the tool's alone
        try:
            value = t.call(args, context)
        except Exception as exc:  # a tool's failure is an event fed back to the model
            return self._failed(t, started, f"{type(exc).__name__}: {exc}", begin, 1, False, context)
        return self._returned(t, started, value, begin, 1, context)

    def _arguments(self, run: _Run, t: Tool, started: ToolStarted, share: int) -> tuple[Any, ToolContext | None]:
        args = run.args.pop(started.call_id, None)
        if args is None:  # decided by another process before a crash
            args = t.decode(started.arguments)
        if not t.context_param:
            return args, None
        state = run.state
        return args, ToolContext(
            run.run_id, started.call_id, state.principal, tuple(run.transcript.messages),
            budget=Budget.left(state, share), meter=Meter(), redaction=run.log.redaction or None,
        )

    def _returned(self, t: Tool, started: ToolStarted, value: Any, begin: int, attempts: int,
                  context: ToolContext | None) -> Event:
        """The event for a tool that returned ``value``."""
        now = self.runtime.clock.now_us()
        output = value if isinstance(value, ToolOutput) else None
        try:
            result = encode_result(value if output is None else output.result)
        except (TypeError, ValueError) as exc:
            return self._failed(t, started, f"the result is not JSON-encodable: {exc}", begin, attempts, False, context)
        meter = context.meter if context is not None else None
        if output is None and (meter is None or meter.empty):  # spent nothing, hands nothing on
            return ToolSucceeded(
                at=now, call_id=started.call_id, tool=t.name, result=result, latency_us=now - begin, attempts=attempts,
            )
        meter = meter or Meter()
        if output is not None:
            meter.add(output.usage, output.cost_nusd, output.child_run_id)
        return ToolSucceeded(
            at=now, call_id=started.call_id, tool=t.name, result=result, latency_us=now - begin, attempts=attempts,
            usage=spent(meter.usage), cost_nusd=meter.cost_nusd, child_run_id=meter.child_run_id,
            final=output is not None and output.final,
        )

    def _failed(self, t: Tool, started: ToolStarted, error: str, begin: int, attempts: int, timed_out: bool,
                context: ToolContext | None) -> ToolFailed:
        now = self.runtime.clock.now_us()
        meter = context.meter if context is not None else None
        if meter is None:
            return ToolFailed(at=now, call_id=started.call_id, tool=t.name, error=error, timed_out=timed_out,
                              latency_us=now - begin, attempts=attempts)
        return ToolFailed(at=now, call_id=started.call_id, tool=t.name, error=error, timed_out=timed_out,
                          latency_us=now - begin, attempts=attempts, usage=spent(meter.usage),
                          cost_nusd=meter.cost_nusd, child_run_id=meter.child_run_id)

    async def _run_tool(self, run: _Run, started: ToolStarted, share: int) -> Event:
        t = self.tools[started.tool]
        args, context = self._arguments(run, t, started, share)
        if t.inline and not t.is_async:  # runs to completion on the loop: no timeout applies
            async def call() -> Any:
                return t.call(args, context)
            timeout = None
        else:
            timeout = t.timeout_s if t.timeout_s is not None else run.state.limits.tool_timeout_s
            if t.is_async:
                async def call() -> Any:
                    return await t.call(args, context)
            else:
                async def call() -> Any:
                    return await anyio.to_thread.run_sync(t.call, args, context, abandon_on_cancel=True)
        begin = self.runtime.clock.now_us()
        outcome = await attempt(call, t.retry, timeout)
        if outcome.ok:
            return self._returned(t, started, outcome.value, begin, outcome.attempts, context)
        return self._failed(t, started, outcome.error, begin, outcome.attempts, outcome.timed_out, context)
