"""The agent engine: drives an agent's runs on the spine.

It folds the run's events, asks ``core.effects.next_effect`` what to do, performs that effect
(call the model, run tools) and records the outcome through the run's one log writer
(``run.log``). Events are appended in one batch per side effect: a batch is committed
before the model is called and before a tool that is not idempotent runs, so a step costs
one store round trip, two when it runs a side-effecting tool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, final

import anyio
import msgspec

from ..core.definition import changed_parts, definition_parts, hash_parts, recorded_parts
from ..core.effects import (
    CallModel,
    DecideCalls,
    ForceAnswer,
    Record,
    RunTools,
    next_effect,
    resume_events,
)
from ..core.events import (
    Event,
    LimitExceeded,
    Limits,
    MemoryRecalled,
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
    Sent,
    Usage,
    spent,
)
from ..core.fsm import INTERRUPTED, Phase, RunState, fold
from ..core.limits import PriceTable, cap_call
from ..core.protocols import (
    Model,
    ModelTurn,
    Store,
    accepts_max_tokens,
    answering_models,
    current_run_id,
)
from ..core.redaction import Redaction
from ..core.replay import ReplayReport, replay_events
from ..core.tokens import ByteBound, Tokenizer, message_tokens, tools_tokens
from ..core.tools import Retry, Tools, record_calls
from ..core.transcript import Transcript
from ..errors import ConfigError, DefinitionChanged, ModelError
from ..memory.context import ContextPolicy, Request
from .attempt import Attempted, attempt_again, deadline_passed, time_left
from .calls import AgentRun, Calls
from .context import Fitting
from .log import RunLog, open_log, plaintext_of, status_of
from .memories import Remembering, recall_message
from .runtime import Runtime, bind
from .watch import watched

__all__ = ["Engine", "RunResult"]

YIELD_EVERY_S = 0.001  # the longest a run advances without letting the event loop run

_CANNOT_CAP = (
    "{model}'s respond() takes no max_tokens, so router cannot cap a call's output "
    "under {why}; add a keyword max_tokens: int | None = None to it"
)
_BEFORE_CALL = "before the model call: its worst case (the input, one output token) would pass it"
Prepared = tuple[Sequence[Message], Callable[..., Awaitable[ModelTurn]], "Sent | None"]


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
    forced: str = ""  # the limit that forced the output, a last answer (Limits.final_answer)

    @classmethod
    def of(cls, run_id: str, state: RunState) -> RunResult:
        return cls(
            run_id=run_id,
            phase=state.phase,
            output=state.output,
            reason=state.reason,
            steps=state.steps,
            tool_calls=state.tool_calls,
            usage=state.usage,
            cost_usd=state.cost_nusd / 1e9,
            interrupted=(
                tuple([c.call.id for c in state.calls if c.status == "interrupted"])
                if state.phase is INTERRUPTED
                else ()
            ),
            review=state.pending_review,
            forced=state.forced,
        )


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
        tokenizer: Tokenizer | None = None,
        context: ContextPolicy | None = None,
        summarizer: Model | None = None,
        memory: Remembering | None = None,
        max_text_bytes: int = 1_048_576,
    ) -> None:
        self.model = model
        self.tools = tools
        self._bind(Runtime.of(store_or_runtime))
        self.limits = limits or Limits()
        self.prices = prices or PriceTable()
        self.model_retry = model_retry or Retry(attempts=3, base_delay_s=0.2)
        self.agent = agent
        self.output_check = output_check
        check_name = getattr(output_check, "__name__", "check") if output_check is not None else ""
        self.review = msgspec.structs.replace(review or ReviewRules(), output_check=check_name)
        self.redaction = redaction or Redaction()
        self.parts = definition_parts(
            model.name, tools, self.prices, self.redaction, self.review, output_check
        )
        self._elsewhere: Engine | None = None  # this Engine on the runtime last asked for
        self.definition = hash_parts(self.parts)
        self.tokenizer = tokenizer or ByteBound()
        if type(max_text_bytes) is not int or max_text_bytes < 1:
            raise ConfigError(f"max_text_bytes must be a positive integer, not {max_text_bytes!r}")
        self.max_text_bytes = max_text_bytes
        self._spend(context, summarizer, memory)
        self._check_ceilings(self.limits)

    def _spend(
        self, context: ContextPolicy | None, summarizer: Model | None, memory: Remembering | None
    ) -> None:
        """What bounds each model call: the answering models' prices, window and output
        reserve, the context policy and the memory's recall."""
        model = self.model
        self._tools_tokens = tools_tokens(self.tokenizer, self.tools.schemas)
        self._answering = answering_models(model)
        self._rates = self.prices.worst_rates(self._answering)
        window, self._reserve = self.prices.window(self._answering)
        self._caps_output = accepts_max_tokens(model)
        if self._reserve is not None and not self._caps_output:
            raise ConfigError(_CANNOT_CAP.format(model=model.name, why="an output reserve"))
        self.memory = memory
        recall = memory.recall if memory is not None else None
        self._recall_tokens = recall.budget_tokens if recall is not None else 0
        self.fitting = None
        if context is not None:
            self.fitting = Fitting(
                context,
                budget=None if window is None else window - (self._reserve or 0),
                tokenizer=self.tokenizer,
                summarizer=summarizer,
                prices=self.prices,
                retry=self.model_retry,
            )
        elif summarizer is not None:
            raise ConfigError("a summariser works for a context policy: pass context= too")
        self._plain = self.fitting is None and not self._recall_tokens and self._reserve is None

    def _check_ceilings(self, limits: Limits) -> None:
        """Refuse a cost ceiling over an unpriced model (it would cost $0 and never fire),
        and a token or cost ceiling over a model whose output cannot be capped."""
        if limits.max_cost_usd is not None:
            self.prices.require(self._answering)
            if self.fitting is not None:
                self.prices.require(self.fitting.summarizers)
        capped = (limits.max_cost_usd, limits.max_total_tokens, limits.max_output_tokens)
        if not self._caps_output and any(c is not None for c in capped):
            raise ConfigError(_CANNOT_CAP.format(model=self.model.name, why="a ceiling"))

    def on(self, runtime: Runtime) -> Engine:
        """This agent on another runtime (a child run executes on its parent's)."""
        return bind(self, runtime)

    def _bind(self, runtime: Runtime) -> None:
        self.runtime, self.store, self._calls = (
            runtime,
            runtime.store,
            Calls(self.tools, runtime.clock),
        )

    async def start(
        self,
        messages: str | Sequence[Message | dict[str, Any]],
        *,
        principal: Principal | dict[str, Any],
        limits: Limits | None = None,
        run_id: str | None = None,
        parent_run_id: str = "",
        redaction: Redaction | None = None,
        drive: bool = True,
    ) -> RunResult:
        """Start a run and drive it until it ends or waits for a reviewer.

        drive: False records the run's start and returns at once, the run left for a
        ``Worker`` to advance (a service that enqueues runs for its workers).
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
        self._check_ceilings(limits or self.limits)
        policy = self.redaction | redaction if redaction else self.redaction
        run = AgentRun(
            RunLog(runtime, run_id, policy), RunState(), Transcript()
        )  # its first batch takes the lease
        run.add(
            RunStarted(
                at=runtime.clock.now_us(),
                messages=opening,
                principal=principal,
                limits=limits or self.limits,
                model=self.model.name,
                tools=self.tools.names,
                definition=self.definition,
                redaction=RedactionPolicy(**policy.describe()) if policy else RedactionPolicy(),
                agent=self.agent,
                review=self.review,
                parent_run_id=parent_run_id,
                parts=self.parts,
            )
        )
        if not drive:  # recorded, its lease given back: a Worker advances it
            await run.log.close(run.state)
            return RunResult.of(run_id, run.state)
        return await self._drive(run)

    async def resume(self, run_id: str, *, migration: str | None = None) -> RunResult:
        """Continue an unfinished run from its log alone.

        A finished run, or one still waiting for a decision, is returned as it stands.
        Calls started before a crash with no result run again if their tool is
        idempotent; otherwise the run stops, interrupted, until ``resolve_call``.

        Raises DefinitionChanged, naming what changed, if the run was started under another
        definition (tools and their code, schemas, policy, prices, model), unless
        ``migration`` names the change: the log then records it and the run continues
        under this engine's definition. Raises LeaseHeld if another process holds the run,
        ConfigError if it is a graph run.
        """
        events, log = await open_log(self.runtime, run_id, self.redaction, kind=RunStarted)
        try:
            run = AgentRun(log, fold(events), Transcript(events))
            state = run.state
            if status_of(state) != "active":  # ended, or waiting for a person
                await log.close(state)
                return RunResult.of(run_id, state)
            self._check_ceilings(state.limits)
            now = self.runtime.clock.now_us()
            if state.definition != self.definition:
                if migration is None:
                    changed = changed_parts(recorded_parts(events), self.parts)
                    raise DefinitionChanged(run_id, state.definition, self.definition, changed)
                run.add(
                    RunMigrated(
                        at=now,
                        migration=migration,
                        from_definition=state.definition,
                        to_definition=self.definition,
                        parts=self.parts,
                    )
                )
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
        events, log = await open_log(
            self.runtime, run_id, self.redaction, lease=False, kind=RunStarted
        )
        return replay_events(run_id, events, self.tools, self.prices, plaintext_of(log.redaction))

    async def _drive(self, run: AgentRun) -> RunResult:
        """Advance the run until it stops, then release its lease, whatever happened."""
        token = current_run_id.set(run.run_id)  # model adapters tag their stream deltas with it
        watch = self.runtime.watch
        watch.watch(run, run.state.limits.model_timeout_s)
        try:
            return await self._advance(run)
        finally:
            watch.unwatch(run)
            current_run_id.reset(token)
            await run.log.release()

    async def _advance(self, run: AgentRun) -> RunResult:
        log = run.log
        try:
            while True:
                effect = next_effect(run.state)
                kind = type(effect)
                if kind is CallModel:
                    await log.flush()
                    now = time.perf_counter()
                    if now - run.yielded_at > YIELD_EVERY_S:  # a run that never waits
                        run.yielded_at = now  # still lets the loop cancel it and run timers
                        await asyncio.sleep(0)
                    if not run.state.limits.timed:
                        run.add(await self._ask_model(run))
                    else:
                        run.add(await self._ask_model_within_deadline(run))
                elif kind is DecideCalls:
                    self._decide(run, effect)  # type: ignore[arg-type]
                elif kind is RunTools:
                    calls = effect.calls  # type: ignore[attr-defined]
                    inline = self._calls.inline_now(run, calls)
                    if inline is not None:
                        run.add(
                            self._calls.run_inline(run, inline, calls[0])
                        )  # nothing to wait for, nothing to await
                        continue
                    if not all(s.idempotent for s in calls):
                        await log.flush()
                    for event in await self._calls.run_all(run, calls):
                        run.add(event)
                elif kind is Record:
                    run.add(effect.event)  # type: ignore[attr-defined]
                elif kind is ForceAnswer:  # a limit was reached: the model's last answer
                    await log.flush()
                    limit = effect.limit  # type: ignore[attr-defined]
                    run.add(await self._ask_model_within_deadline(run, limit))  # rare: no fast path
                else:  # Finish, AwaitDecision or Idle: the run stops here
                    await log.close(run.state)
                    return RunResult.of(run.run_id, run.state)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if not run.state.terminal and not log.handed_over:
                    run.add(
                        RunCancelled(
                            at=self.runtime.clock.now_us(),
                            reason="the task driving the run was cancelled",
                            unsure=self._calls.unsure(run),
                        )
                    )
                await log.close(run.state)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:  # the process is stopping: say so first
            with anyio.CancelScope(shield=True):
                self._calls.stopped(run, exc)
                await log.close(run.state)
            raise

    def _decide(self, run: AgentRun, effect: DecideCalls) -> None:
        principal, now = run.state.principal, self.runtime.clock.now_us()
        for call in effect.calls:
            event, args = self.tools.decide(call, principal, now)
            if args is not None:
                run.args[call.id] = args
            run.add(event)

    async def _ask_model_within_deadline(self, run: AgentRun, forced: str = "") -> Event:
        with anyio.move_on_after(time_left(self.runtime.clock, run.state)):
            return await self._ask_model(run, forced)
        return deadline_passed(self.runtime.clock, run.state)

    async def _ask_model(self, run: AgentRun, forced: str = "") -> Event:
        """One model turn: its first attempt here, any others in the attempt loop's retries;
        the turn is recorded outside them, so a turn that cannot be recorded is never asked
        for again. forced: the limit that asks for a last answer, offered no tools."""
        clock = self.runtime.clock
        begin = clock.now_us()
        schemas = self.tools.schemas if not forced else ()
        messages: Sequence[Message]
        respond: Callable[..., Awaitable[ModelTurn]]
        sent: Sent | None
        if self._plain and not run.state.budgeted:  # nothing to fit, cap or recall
            messages = run.transcript.messages
            respond = self.model.respond
            sent = None
        else:
            prepared = await self._prepare(run, begin, 0 if forced else self._tools_tokens)
            if not isinstance(prepared, tuple):
                return prepared
            messages, respond, sent = prepared
        try:
            turn = await watched(run, respond, messages, schemas)  # bounded (run.watch)
        except Exception as first:  # an adapter's ModelError has spent its own retries
            again = partial(watched, run, respond)
            outcome = await attempt_again(
                again, self.model_retry, None, (messages, schemas), ModelError, first
            )
            if not outcome.ok:
                return self._model_failed(run, outcome)
            turn = outcome.value
        if type(turn) is not ModelTurn:
            reason = f"the model returned {type(turn).__name__}, not ModelTurn"
            return RunFailed(at=clock.now_us(), code="model_error", reason=reason)
        if len(turn.text) > self.max_text_bytes and len(turn.text.encode()) > self.max_text_bytes:
            reason = (
                f"the model's text is {len(turn.text.encode()):,} bytes, over the engine's "
                f"cap of {self.max_text_bytes:,} (max_text_bytes)"
            )
            return RunFailed(at=clock.now_us(), code="model_output_too_large", reason=reason)
        if turn.route:
            answered = next((a.model for a in turn.route if a.outcome == "answered"), "")
            self._routed(run, answered, turn.route)
        try:
            return self._responded(run.state, turn, begin, sent, forced)
        except Exception as exc:  # a strict price table without this model, a check that raised
            code = "config_error" if isinstance(exc, ConfigError) else "output_check_failed"
            return RunFailed(at=clock.now_us(), code=code, reason=f"{type(exc).__name__}: {exc}")

    async def _prepare(self, run: AgentRun, begin: int, tools_tokens: int) -> Prepared | Event:
        """The next call's messages (fitted by the context policy, if any), the model's
        respond with the answer's cap bound to it, and what was sent; or the event that
        ends the run instead (a ceiling the call would pass, a context that cannot fit)."""
        messages: Sequence[Message] = run.transcript.messages
        request = None
        if self.fitting is not None:
            reserved = tools_tokens + self._recall_tokens
            fitted = await self.fitting.fit(run, reserved, self.runtime.clock)
            if not isinstance(fitted, Request):
                return fitted
            request, messages = fitted, fitted.messages
        recalled = 0
        if self._recall_tokens:
            memory = await self._recall(run)
            if not isinstance(memory, MemoryRecalled):
                return memory
            if memory.texts:
                opening = run.transcript.opening
                note = recall_message(memory)
                messages = [*messages[:opening], note, *messages[opening:]]
                recalled = message_tokens(self.tokenizer, note)
        respond: Callable[..., Awaitable[ModelTurn]] = self.model.respond
        cap = self._reserve
        if run.state.budgeted or request is not None:
            tokens = tools_tokens + recalled
            tokens += (
                request.tokens if request is not None else run.transcript_tokens(self.tokenizer)
            )
            if run.state.budgeted:
                verdict = cap_call(run.state, tokens, self._rates, cap)
                if isinstance(verdict, LimitExceeded):
                    return msgspec.structs.replace(verdict, at=begin, detail=_BEFORE_CALL)
                cap = verdict
            sent = Sent(tokens=tokens, messages=len(messages), max_tokens=cap or 0)
            if request is not None:
                sent = msgspec.structs.replace(
                    sent,
                    shortened=request.shortened,
                    left_out=request.left_out,
                    summarized=request.summarized,
                )
        else:
            sent = None
        if cap is not None:
            respond = partial(respond, max_tokens=cap)
        return messages, respond, sent

    async def _recall(self, run: AgentRun) -> MemoryRecalled | RunFailed:
        """The recall for the run's next turn: the one its log holds (a resume), else a
        new one, recorded unless it found nothing."""
        assert self.memory is not None
        recalled = run.transcript.recalled
        if recalled is not None and recalled.step == run.state.steps + 1:
            return recalled
        try:
            recalled = await self.memory.recall_for(run, self.runtime.clock, self.tokenizer)
        except Exception as exc:  # the embedder or the memory failed: the run says so
            reason = f"long-term memory failed: {type(exc).__name__}: {exc}"
            return RunFailed(at=self.runtime.clock.now_us(), code="memory_error", reason=reason)
        if recalled.ids:
            run.add(recalled)
        return recalled

    def _model_failed(self, run: AgentRun, outcome: Attempted) -> RunFailed:
        last = outcome.exception
        if isinstance(last, ModelError) and last.route:
            self._routed(run, "", last.route)  # type: ignore[arg-type]
        error = f"{type(last).__name__}: {last}" if last is not None else outcome.error
        reason = f"the model failed after {outcome.attempts} attempt(s) here; last error: {error}"
        code = "model_timeout" if isinstance(last, TimeoutError) else "model_error"
        return RunFailed(at=self.runtime.clock.now_us(), code=code, reason=reason)

    def _routed(self, run: AgentRun, chosen: str, route: tuple[RouteAttempt, ...]) -> None:
        run.add(
            ModelRouted(
                at=self.runtime.clock.now_us(),
                step=run.state.steps + 1,
                chosen=chosen,
                attempts=route,
            )
        )

    def _responded(
        self, state: RunState, turn: ModelTurn, begin: int, sent: Sent | None, forced: str
    ) -> ModelResponded:
        now = self.runtime.clock.now_us()
        model = turn.model or self.model.name
        step = state.steps + 1
        held = ""
        proposed = turn.tool_calls if not forced else ()  # no tool was offered: none is taken
        if not proposed and self.output_check is not None:
            held = self.output_check(turn.text) or ""
        return ModelResponded(
            at=now,
            step=step,
            text=turn.text,
            tool_calls=record_calls(step, proposed),
            usage=spent(turn.usage),
            cost_nusd=self.prices.cost_nusd(model, turn.usage),
            model=model,
            latency_us=now - begin,
            held=held,
            served_model=turn.served_model if turn.served_model != model else "",
            sent=sent,
            forced=forced,
        )
