"""The async driver: the only core module that awaits.

It folds the run's events, asks ``fsm.next_effect`` what to do, performs that effect
(call the model, run tools) and records the outcome as events. Events are appended in
one batch per side effect: a batch is committed before the model is called and before
a tool that is not idempotent runs, so a step costs one store round trip, two when it
runs a side-effecting tool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, final

import anyio
import msgspec

from .chain import Chain
from .clock import Clock, IdSource, RandomIds, SystemClock
from .definition import definition_hash
from .redaction import Redaction
from .errors import ConfigError, DefinitionChanged, ModelError
from .events import (
    Event,
    Limits,
    Message,
    ModelResponded,
    ModelRouted,
    Principal,
    RouteAttempt,
    RunCancelled,
    RunFailed,
    RunMigrated,
    ReviewRules,
    RunStarted,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    Usage,
    LimitExceeded,
    encode_event,
    spent,
)
from .fsm import (
    INTERRUPTED,
    CallModel,
    DecideCalls,
    Phase,
    Record,
    RunState,
    RunTools,
    apply,
    next_effect,
    resume_events,
)
from .limits import PriceTable
from .protocols import Cipher, LeaseChange, Model, ModelTurn, Observer, Store, current_run_id
from .replay import ReplayReport, replay_events
from .tools import Retry, Tool, ToolContext, ToolOutput, Tools, encode_result, record_calls
from .runlog import load_run
from .transcript import Transcript

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
    """One run being advanced: its folded state, transcript, chain head and unsaved events."""

    __slots__ = ("run_id", "state", "transcript", "chain", "pending", "args")

    def __init__(self, run_id: str, chain: Chain, state: RunState, transcript: Transcript) -> None:
        self.run_id = run_id
        self.chain = chain
        self.state = state
        self.transcript = transcript
        self.pending: list[Event] = []
        self.args: dict[str, Any] = {}  # decoded arguments of calls decided in this process

    def add(self, event: Event) -> None:
        self.state = apply(self.state, event)
        self.transcript.apply(event)
        self.pending.append(event)


@final
class Engine:
    """Drives runs of one agent: a model, its tools and a store.

    clock and ids are injected so that tests and replays are deterministic. ``owner``
    names this process in leases; two engines never advance the same run at once.
    ``agent`` names the agent in every run it starts (and in exports and traces).
    """

    def __init__(
        self,
        store: Store,
        model: Model,
        tools: Tools,
        *,
        limits: Limits | None = None,
        prices: PriceTable | None = None,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        owner: str | None = None,
        lease_ttl_s: float = 30.0,
        model_retry: Retry | None = None,
        redaction: Redaction | None = None,
        observers: Sequence[Observer] = (),
        cipher: Cipher | None = None,
        agent: str = "",
        review: ReviewRules | None = None,
        output_check: Callable[[str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.tools = tools
        self.limits = limits or Limits()
        self.prices = prices or PriceTable()
        self.clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.owner = owner or RandomIds().new_id("engine")
        self.lease_ttl_s = lease_ttl_s
        self.model_retry = model_retry or Retry(attempts=3, base_delay_s=0.2)
        self.agent = agent
        self.output_check = output_check
        check_name = getattr(output_check, "__name__", "check") if output_check is not None else ""
        self.review = msgspec.structs.replace(review or ReviewRules(), output_check=check_name)
        self.observers = tuple(observers)
        self.redaction = redaction or Redaction()
        self._tool_names, self._redacted = tools.names, self.redaction.names()  # recorded in every run_started
        self.definition = definition_hash(model.name, tools, self.prices, self.redaction, self.review)
        self.cipher = cipher
        # What an event becomes before it is hashed: redacted, then encrypted. Replay
        # compares the plaintext form, since encryption is randomized.
        self.plaintext: Callable[[Event], bytes] = (
            (lambda event: self.redaction.apply(encode_event(event))) if self.redaction else encode_event
        )
        self.encode: Callable[[Event], bytes] = (
            (lambda event: cipher.seal(self.plaintext(event))) if cipher is not None else self.plaintext
        )
        self._renew_at: dict[str, float] = {}  # run id -> when (time.monotonic) its lease is renewed

    async def start(
        self,
        messages: str | Sequence[Message | dict[str, Any]],
        *,
        principal: Principal | dict[str, Any],
        limits: Limits | None = None,
        run_id: str | None = None,
        parent_run_id: str = "",
    ) -> RunResult:
        """Start a run and drive it until it ends or waits for a reviewer.

        parent_run_id: for a child agent, the run that spawned it (recorded in its log)."""
        try:
            if isinstance(messages, str):
                opening: tuple[Message, ...] = (Message(role="user", content=messages),)
            else:
                opening = msgspec.convert(list(messages), tuple[Message, ...])
            if not isinstance(principal, Principal):
                principal = msgspec.convert(principal, Principal)
        except (msgspec.ValidationError, TypeError) as exc:
            raise ConfigError(f"cannot start a run: {exc}") from exc
        if run_id is None:
            run_id = self.ids.new_id("run")
        elif await self.store.read(run_id):  # a chosen id may be taken; a generated one is not
            raise ConfigError(f"run {run_id!r} already exists; resume it instead")
        run = _Run(run_id, Chain(run_id), RunState(), Transcript())  # its first batch takes the lease
        run.add(RunStarted(
            at=self.clock.now_us(), messages=opening, principal=principal,
            limits=limits or self.limits, model=self.model.name, tools=self._tool_names,
            definition=self.definition, redaction=self._redacted, agent=self.agent, review=self.review,
            parent_run_id=parent_run_id,
        ))
        return await self._drive(run)

    async def resume(self, run_id: str, *, migration: str | None = None) -> RunResult:
        """Continue an unfinished run from its log alone.

        A finished run, or one still waiting for a decision, is returned as it stands.
        Calls started before a crash with no result run again if their tool is
        idempotent; otherwise the run stops, interrupted, until ``resolve_call``.

        Raises DefinitionChanged if the run was started under another definition (tools,
        schemas, policy, prices, model), unless ``migration`` names the change: the log
        then records it and the run continues under this engine's definition.
        """
        await self._lease(run_id)
        try:
            events, state, chain = await load_run(self.store, run_id, self.cipher)
        except BaseException:
            await self._release(run_id)
            raise
        run = _Run(run_id, chain, state, Transcript(events))
        if state.terminal or state.phase in (Phase.INTERRUPTED, Phase.AWAITING_REVIEW):
            await self._release(run_id)
            return RunResult.of(run_id, state)
        now = self.clock.now_us()
        if state.definition != self.definition:
            if migration is None:
                await self._release(run_id)
                raise DefinitionChanged(run_id, state.definition, self.definition)
            run.add(RunMigrated(at=now, migration=migration, from_definition=state.definition,
                                to_definition=self.definition))
        for event in resume_events(state, now, self.owner):
            run.add(event)
        return await self._drive(run)

    async def replay(self, run_id: str) -> ReplayReport:
        """Drive the run again from its log with this engine's tools, policy and prices,
        taking the model's answers and the tools' results from the log, and compare every
        event router decides with the recorded one (timestamps aside)."""
        events, _, _ = await load_run(self.store, run_id, self.cipher)
        return replay_events(run_id, events, self.tools, self.prices, self.plaintext)

    async def _drive(self, run: _Run) -> RunResult:
        """Advance the run until it stops, then release its lease, whatever happened."""
        token = current_run_id.set(run.run_id)  # model adapters tag their stream deltas with it
        try:
            result = await self._advance(run)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if run.run_id in self._renew_at:
                    await self._release(run.run_id)
            raise
        finally:
            current_run_id.reset(token)
        if run.run_id in self._renew_at:  # still held: the last batch did not release it
            await self._release(run.run_id)
        return result

    async def _advance(self, run: _Run) -> RunResult:
        try:
            while True:
                effect = next_effect(run.state)
                kind = type(effect)
                if kind is CallModel:
                    await self._flush(run)
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
                        await self._flush(run)
                    for event in await self._run_tools(run, calls):
                        run.add(event)
                elif kind is Record:
                    run.add(effect.event)  # type: ignore[attr-defined]
                else:  # Finish, AwaitDecision or Idle: the run stops here
                    await self._flush(run, last=True)
                    return RunResult.of(run.run_id, run.state)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if not run.state.terminal:
                    run.add(RunCancelled(at=self.clock.now_us(), reason="the task driving the run was cancelled"))
                await self._flush(run)
            raise

    def _decide(self, run: _Run, effect: DecideCalls) -> None:
        principal, now = run.state.principal, self.clock.now_us()
        for call in effect.calls:
            event, args = self.tools.decide(call, principal, now)
            if args is not None:
                run.args[call.id] = args
            run.add(event)

    async def _flush(self, run: _Run, *, last: bool = False) -> None:
        """Commit the pending events. The run's lease rides along in the same transaction:
        taken with its first batch (or renewed before it could lapse), released with its
        last (``last``), so a lease costs no round trip of its own."""
        if not run.pending:
            return
        lease: LeaseChange | None = None
        renew_at = self._renew_at.get(run.run_id)
        if renew_at is None or time.monotonic() > renew_at:
            lease = LeaseChange(self.owner, self.lease_ttl_s)
        elif last:
            lease = LeaseChange(self.owner)
        sealed = run.chain.seal(run.pending, self.encode)
        await self.store.append(sealed, lease=lease)
        if lease is not None:
            if lease.ttl_s is None:
                del self._renew_at[run.run_id]
            else:
                self._renew_at[run.run_id] = time.monotonic() + self.lease_ttl_s / 3  # renewed well before it lapses
        run.chain.advance(sealed)
        for observer in self.observers:
            observer.committed(run.run_id, run.pending)
        run.pending.clear()

    def _remaining(self, state: RunState) -> float:
        deadline = state.limits.deadline_s
        if deadline is None:
            return float("inf")
        return deadline - (self.clock.now_us() - state.started_at) / 1e6

    def _deadline_passed(self, state: RunState) -> LimitExceeded:
        elapsed = (self.clock.now_us() - state.started_at) / 1e6
        return LimitExceeded(
            at=self.clock.now_us(), limit="deadline", value=elapsed, ceiling=state.limits.deadline_s or 0,
            detail="the deadline passed while router waited",
        )

    async def _ask_model_within_deadline(self, run: _Run) -> Event:
        with anyio.move_on_after(self._remaining(run.state)):
            return await self._ask_model(run)
        return self._deadline_passed(run.state)

    async def _ask_model(self, run: _Run) -> Event:
        state = run.state
        begin = self.clock.now_us()
        error = ""
        for attempt in range(1, self.model_retry.attempts + 1):
            if attempt > 1:
                await anyio.sleep(self.model_retry.delay_before(attempt))
            try:
                turn = await self.model.respond(run.transcript.messages, self.tools.schemas)
                if not isinstance(turn, ModelTurn):
                    raise TypeError(f"the model returned {type(turn).__name__}, not ModelTurn")
                if turn.route:
                    self._routed(run, next((a.model for a in turn.route if a.outcome == "answered"), ""), turn.route)
                return self._responded(state, turn, begin)
            except ModelError as exc:  # a provider adapter has spent its own retries
                error = f"{type(exc).__name__}: {exc}"
                if exc.route:
                    self._routed(run, "", exc.route)  # type: ignore[arg-type]
                break
            except Exception as exc:  # recorded as run_failed once the retries are spent
                error = f"{type(exc).__name__}: {exc}"
        return RunFailed(
            at=self.clock.now_us(), code="model_error",
            reason=f"the model failed after {attempt} attempt(s) here; last error: {error}",
        )

    def _routed(self, run: _Run, chosen: str, route: tuple[RouteAttempt, ...]) -> None:
        run.add(ModelRouted(at=self.clock.now_us(), step=run.state.steps + 1, chosen=chosen, attempts=route))

    def _responded(self, state: RunState, turn: ModelTurn, begin: int) -> ModelResponded:
        now = self.clock.now_us()
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
            return [await self._run_tool(run, calls[0])]
        results: list[Event | None] = [None] * len(calls)
        waiting = [i for i, c in enumerate(calls) if not self._runs_inline(c.tool)]

        async def one(i: int) -> None:
            results[i] = await self._run_tool(run, calls[i])

        async def all_calls() -> None:
            for i, c in enumerate(calls):
                if results[i] is None and i not in waiting:
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
        if t.inline_once and (calls[0].idempotent or not run.pending) and run.state.limits.deadline_s is None:
            return t
        return None

    def _run_inline(self, run: _Run, t: Tool, started: ToolStarted) -> Event:
        """One attempt of an inline sync tool, on the loop."""
        args, context = self._arguments(run, t, started)
        begin = self.clock.now_us()  # after the arguments: the tool's time is the tool's alone
        try:
            value = t.call(args, context)
        except Exception as exc:  # a tool's failure is an event fed back to the model
            now = self.clock.now_us()
            return ToolFailed(at=now, call_id=started.call_id, tool=t.name, error=f"{type(exc).__name__}: {exc}",
                              latency_us=now - begin, attempts=1)
        return self._returned(t, started, value, begin, 1)

    def _arguments(self, run: _Run, t: Tool, started: ToolStarted) -> tuple[Any, ToolContext | None]:
        args = run.args.pop(started.call_id, None)
        if args is None:  # decided by another process before a crash
            args = t.decode(started.arguments)
        context = (
            ToolContext(run.run_id, started.call_id, run.state.principal, tuple(run.transcript.messages))
            if t.context_param else None
        )
        return args, context

    def _returned(self, t: Tool, started: ToolStarted, value: Any, begin: int, attempt: int) -> Event:
        """The event for a tool that returned ``value``."""
        now = self.clock.now_us()
        output = value if isinstance(value, ToolOutput) else None
        try:
            result = encode_result(value if output is None else output.result)
        except (TypeError, ValueError) as exc:
            return ToolFailed(
                at=now, call_id=started.call_id, tool=t.name,
                error=f"the result is not JSON-encodable: {exc}", latency_us=now - begin, attempts=attempt,
            )
        if output is None:  # a plain value: the tool spent nothing and hands nothing on
            return ToolSucceeded(
                at=now, call_id=started.call_id, tool=t.name, result=result, latency_us=now - begin, attempts=attempt,
            )
        return ToolSucceeded(
            at=now, call_id=started.call_id, tool=t.name, result=result, latency_us=now - begin, attempts=attempt,
            usage=spent(output.usage), cost_nusd=output.cost_nusd, child_run_id=output.child_run_id, final=output.final,
        )

    async def _run_tool(self, run: _Run, started: ToolStarted) -> Event:
        t = self.tools[started.tool]
        args, context = self._arguments(run, t, started)
        timeout = t.timeout_s if t.timeout_s is not None else run.state.limits.tool_timeout_s
        begin = self.clock.now_us()
        errors: list[str] = []
        timeouts = 0
        for attempt in range(1, t.retry.attempts + 1):
            if attempt > 1:
                await anyio.sleep(t.retry.delay_before(attempt))
            try:
                if t.inline and not t.is_async:  # runs to completion on the loop: no timeout applies
                    value = t.call(args, context)
                else:
                    with anyio.fail_after(timeout if timeout is not None else float("inf")):
                        if t.is_async:
                            value = await t.call(args, context)
                        else:
                            value = await anyio.to_thread.run_sync(t.call, args, context, abandon_on_cancel=True)
            except TimeoutError:
                timeouts += 1
                errors.append(f"timed out after {timeout:g} s")
                continue
            except Exception as exc:  # a tool's failure is an event fed back to the model
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            return self._returned(t, started, value, begin, attempt)
        return ToolFailed(
            at=self.clock.now_us(), call_id=started.call_id, tool=t.name, error="; ".join(errors),
            timed_out=timeouts == t.retry.attempts, latency_us=self.clock.now_us() - begin,
            attempts=t.retry.attempts,
        )

    async def _lease(self, run_id: str) -> None:
        await self.store.acquire_lease(run_id, self.owner, self.lease_ttl_s)
        self._renew_at[run_id] = time.monotonic() + self.lease_ttl_s / 3  # renewed well before it lapses

    async def _release(self, run_id: str) -> None:
        self._renew_at.pop(run_id, None)
        await self.store.release_lease(run_id, self.owner)
