"""Running a model turn's tool calls for the agent engine: inline tools on the loop, the
others concurrently in a task group, each through the one attempt loop; results come back
as events in call order, with what the calls' child runs spent."""

from __future__ import annotations

import asyncio
import time
from typing import Any, final

import anyio
import msgspec

from ..core.clock import Clock
from ..core.events import Event, RunInterrupted, ToolFailed, ToolStarted, ToolSucceeded, spent
from ..core.fsm import RunState, apply
from ..core.limits import Budget, Meter
from ..core.tokens import Tokenizer, message_tokens
from ..core.tools import Tool, ToolContext, ToolOutput, Tools, encode_result
from ..core.transcript import Transcript
from ..memory.context import Window
from .attempt import attempt, deadline_passed, time_left
from .log import RunLog

__all__ = ["AgentRun", "Calls"]


@final
class AgentRun:
    """One run being advanced: its folded state, transcript and log writer."""

    __slots__ = (
        "run_id",
        "state",
        "transcript",
        "log",
        "pending",
        "args",
        "window",
        "yielded_at",
        "task",
        "model_timeout_s",
        "asking_until",
        "timed_out",
        "_counted",
        "_tokens",
    )

    def __init__(self, log: RunLog, state: RunState, transcript: Transcript) -> None:
        self.run_id = log.run_id
        self.log = log
        self.pending = log.pending  # the writer's unsaved events (one list for the run's life)
        self.state = state
        self.transcript = transcript
        self.args: dict[str, Any] = {}  # decoded arguments of calls decided in this process
        self.window: Window | None = None  # what of the transcript is sent, under a policy
        self.yielded_at = time.perf_counter()  # when the engine last let the loop run
        self.task: asyncio.Task[Any] | None = None  # the task driving it, while watched
        self.model_timeout_s = 0.0  # its model timeout, while watched
        self.asking_until = 0.0  # when the model call under way must end (run.watch)
        self.timed_out = False
        self._counted = 0  # messages whose tokens are in _tokens
        self._tokens = 0

    def transcript_tokens(self, tokenizer: Tokenizer) -> int:
        """The tokens of the whole transcript in a request (each message counted once, when
        it is new)."""
        messages = self.transcript.messages
        for message in messages[self._counted :]:
            self._tokens += message_tokens(tokenizer, message)
        self._counted = len(messages)
        return self._tokens

    def add(self, event: Event) -> None:
        self.state = apply(self.state, event)
        self.transcript.apply(event)
        self.pending.append(event)


@final
class Calls:
    """Runs the started calls of an agent's turns with its tools, on the runtime's clock."""

    __slots__ = ("tools", "clock")

    def __init__(self, tools: Tools, clock: Clock) -> None:
        self.tools, self.clock = tools, clock

    async def run_all(self, run: AgentRun, calls: tuple[ToolStarted, ...]) -> list[Event]:
        """Run the calls of one turn; results come back in call order.

        Async and threaded tools run concurrently in a task group. Inline tools run on the
        loop without yielding, so running them one after another is the same as running
        them concurrently, without a task per call.
        """
        remaining = time_left(self.clock, run.state)
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
            done.append(deadline_passed(self.clock, run.state))
        return done

    def _runs_inline(self, name: str) -> bool:
        t = self.tools[name]
        return t.inline and not t.is_async

    def inline_now(self, run: AgentRun, calls: tuple[ToolStarted, ...]) -> Tool | None:
        """The tool, if the turn is one call that runs once, inline, before the next commit
        (idempotent, or nothing is pending) and with no deadline to race; else None."""
        if len(calls) != 1:
            return None
        t = self.tools[calls[0].tool]
        if (
            t.inline_once
            and (calls[0].idempotent or not run.pending)
            and not run.state.limits.timed
        ):
            return t
        return None

    def unsure(self, run: AgentRun) -> tuple[str, ...]:
        """The calls in flight whose tools are not idempotent: if the run stops now, their
        outcome is unknown (a tool in a worker thread cannot be stopped and may finish)."""
        return tuple(
            c.call.id
            for c in run.state.calls
            if c.status == "started" and c.started is not None and not c.started.idempotent
        )

    def stopped(self, run: AgentRun, exc: BaseException) -> None:
        """Record that the process stopped (SystemExit, KeyboardInterrupt) while calls were
        in flight, before it propagates: a call whose tool is not idempotent has an unknown
        outcome, so the run is interrupted until someone decides (as a resume would find
        it, with the reason); an idempotent call simply runs again on resume."""
        unsure = self.unsure(run)
        if unsure:
            reason = f"the process stopped ({type(exc).__name__}) while the tool ran"
            run.add(RunInterrupted(at=self.clock.now_us(), call_ids=unsure, reason=reason))

    def run_inline(self, run: AgentRun, t: Tool, started: ToolStarted) -> Event:
        """One attempt of an inline sync tool, on the loop."""
        try:
            args, context = self._arguments(run, t, started, 1)
        except msgspec.MsgspecError as exc:
            return self._undecodable(t, started, exc)
        clock = self.clock
        begin = clock.now_us()  # after the arguments: the tool's time is the tool's alone
        try:
            value = t.call(args, context)
        except Exception as exc:  # a tool's failure is an event fed back to the model
            return self._failed(
                t, started, f"{type(exc).__name__}: {exc}", begin, 1, False, context
            )
        return self._returned(t, started, value, begin, 1, context)

    def _undecodable(self, t: Tool, started: ToolStarted, exc: Exception) -> ToolFailed:
        """A call decided before a crash whose recorded arguments no longer decode (a value
        redacted in the log, a schema changed under a migration): it fails, and the model
        hears why, rather than the resume raising."""
        error = f"the recorded arguments no longer decode (redacted in the log?): {exc}"
        return self._failed(t, started, error, self.clock.now_us(), 0, False, None)

    def _arguments(
        self, run: AgentRun, t: Tool, started: ToolStarted, share: int
    ) -> tuple[Any, ToolContext | None]:
        args = run.args.pop(started.call_id, None)
        if args is None:  # decided by another process before a crash
            args = t.decode(started.arguments)
        if not t.context_param:
            return args, None
        state = run.state
        return args, ToolContext(
            run.run_id,
            started.call_id,
            state.principal,
            tuple(run.transcript.messages),
            budget=Budget.left(state, share),
            meter=Meter(),
            redaction=run.log.redaction or None,
            runtime=run.log.runtime,
        )

    def _returned(
        self,
        t: Tool,
        started: ToolStarted,
        value: Any,
        begin: int,
        attempts: int,
        context: ToolContext | None,
    ) -> Event:
        """The event for a tool that returned ``value``."""
        now = self.clock.now_us()
        output = value if isinstance(value, ToolOutput) else None
        try:
            result = encode_result(value if output is None else output.result)
        except (TypeError, ValueError, RecursionError) as exc:
            problem = "it contains itself" if isinstance(exc, RecursionError) else str(exc)
            error = f"the result cannot be encoded as JSON: {problem}"
            return self._failed(t, started, error, begin, attempts, False, context)
        broken = t.check_result(value, result) if output is None else None
        if broken is not None:
            error = f"the result breaks the tool's declared return type: {broken}"
            return self._failed(t, started, error, begin, attempts, False, context)
        if len(result) > t.max_result_bytes and len(result.encode()) > t.max_result_bytes:
            error = (
                f"the result is {len(result.encode()):,} bytes, over the tool's cap of "
                f"{t.max_result_bytes:,} (max_result_bytes)"
            )
            return self._failed(t, started, error, begin, attempts, False, context)
        meter = context.meter if context is not None else None
        if output is None and (meter is None or meter.empty):  # spent nothing, hands nothing on
            return ToolSucceeded(
                at=now,
                call_id=started.call_id,
                tool=t.name,
                result=result,
                latency_us=now - begin,
                attempts=attempts,
            )
        meter = meter or Meter()
        if output is not None:
            meter.add(output.usage, output.cost_nusd)
            if output.child_run_id and not meter.child_run_id:
                meter.child_run_id = output.child_run_id
        return ToolSucceeded(
            at=now,
            call_id=started.call_id,
            tool=t.name,
            result=result,
            latency_us=now - begin,
            attempts=attempts,
            usage=spent(meter.usage),
            cost_nusd=meter.cost_nusd,
            child_run_id=meter.child_run_id,
            final=output is not None and output.final,
        )

    def _failed(
        self,
        t: Tool,
        started: ToolStarted,
        error: str,
        begin: int,
        attempts: int,
        timed_out: bool,
        context: ToolContext | None,
    ) -> ToolFailed:
        now = self.clock.now_us()
        meter = context.meter if context is not None else None
        if meter is None:
            return ToolFailed(
                at=now,
                call_id=started.call_id,
                tool=t.name,
                error=error,
                timed_out=timed_out,
                latency_us=now - begin,
                attempts=attempts,
            )
        return ToolFailed(
            at=now,
            call_id=started.call_id,
            tool=t.name,
            error=error,
            timed_out=timed_out,
            latency_us=now - begin,
            attempts=attempts,
            usage=spent(meter.usage),
            cost_nusd=meter.cost_nusd,
            child_run_id=meter.child_run_id,
        )

    async def _run_tool(self, run: AgentRun, started: ToolStarted, share: int) -> Event:
        t = self.tools[started.tool]
        try:
            args, context = self._arguments(run, t, started, share)
        except msgspec.MsgspecError as exc:
            return self._undecodable(t, started, exc)
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
                    return await anyio.to_thread.run_sync(
                        t.call, args, context, abandon_on_cancel=True
                    )

        begin = self.clock.now_us()
        outcome = await attempt(call, t.retry, timeout)
        if outcome.ok:
            return self._returned(t, started, outcome.value, begin, outcome.attempts, context)
        return self._failed(
            t, started, outcome.error, begin, outcome.attempts, outcome.timed_out, context
        )
