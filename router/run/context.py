"""The agent engine's side of a context policy: it keeps each run's window, asks the
summariser when the policy wants a summary (a model call under the run's ceilings, recorded
as a ``context_summarized`` event) and hands the engine the request to send."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import final

from ..core.clock import Clock
from ..core.events import ContextSummarized, Event, LimitExceeded, Message, RunFailed, spent
from ..core.limits import PriceTable, cap_call
from ..core.protocols import Model, ModelTurn, accepts_max_tokens, answering_models
from ..core.stored import decode_run
from ..core.tokens import REPLY_PRIMING, Tokenizer, message_tokens
from ..core.tools import Retry
from ..core.transcript import origins
from ..errors import ConfigError, ModelError
from ..memory.context import ContextPolicy, Request, Window
from .attempt import attempt_again
from .calls import AgentRun
from .watch import watched

__all__ = ["Fitting"]

SUMMARIZE = (
    "You condense the earlier part of a conversation between a user, an assistant and its "
    "tools, so that the assistant can carry on the task without it. Keep every fact, number, "
    "name, identifier, decision and result that may matter later, and what is still open. "
    "Write plain sentences; do not address the user."
)


@final
class Fitting:
    """One engine's context policy: its budget, tokenizer and summariser (or none)."""

    def __init__(
        self,
        policy: ContextPolicy,
        *,
        budget: int | None,
        tokenizer: Tokenizer,
        summarizer: Model | None,
        prices: PriceTable,
        retry: Retry,
    ) -> None:
        budget = policy.budget_tokens or budget
        if budget is None:
            raise ConfigError(
                "a context policy needs a budget: ContextPolicy(budget_tokens=...) or the "
                "model's context_window in the price table"
            )
        if summarizer is not None and not accepts_max_tokens(summarizer):
            raise ConfigError(f"the summariser {summarizer.name} must take max_tokens")
        self.policy, self.budget, self.tokenizer = policy, budget, tokenizer
        self.summarizer, self.prices, self.retry = summarizer, prices, retry
        self.summarizers = answering_models(summarizer) if summarizer is not None else ()
        self._rates = prices.worst_rates(self.summarizers) if self.summarizers else (0, 0)

    def window(self, run: AgentRun, tools_tokens: int) -> Window:
        if run.window is None:
            room = self.budget - tools_tokens
            if room < 1:
                raise ConfigError(f"the tools alone take {tools_tokens} of {self.budget} tokens")
            run.window = Window(self.policy, room, self.tokenizer, run.transcript.opening)
        return run.window

    async def fit(self, run: AgentRun, tools_tokens: int, clock: Clock) -> Request | Event:
        """The request for the run's next model call; or the event that ends the run
        (the summariser failed, a ceiling would be passed, nothing fits)."""
        window = self.window(run, tools_tokens)
        transcript = run.transcript
        window.follow(transcript.messages)
        if transcript.summary is not None and transcript.summary[1] != window.summarized:
            window.summarized_by(*transcript.summary)
        replaced = window.wants_summary() if self.summarizer is not None else None
        if replaced is not None:
            made = await self._summarize(run, window, replaced, clock)
            if not isinstance(made, ContextSummarized):
                return made
            run.add(made)
            window.summarized_by(made.text, made.replaced)
        request = window.request(transcript.messages)
        if request is None:
            return LimitExceeded(
                at=clock.now_us(),
                limit="context_window",
                value=window.needed(),
                ceiling=window.budget,
                detail="the opening messages and the newest turns alone pass it",
            )
        return request

    async def _summarize(self, run: AgentRun, window: Window, replaced: int, clock: Clock) -> Event:
        assert self.summarizer is not None
        begin = clock.now_us()
        transcript, opening = run.transcript, run.transcript.opening
        previous = transcript.summary[0] if transcript.summary is not None else ""
        condense = transcript.messages[opening + window.summarized : opening + replaced]
        prompt = [
            Message(role="system", content=SUMMARIZE),
            Message(role="user", content=_render(previous, condense)),
        ]
        cap: int | None = self.policy.summary_tokens
        if run.state.budgeted:
            tokens = sum(message_tokens(self.tokenizer, m) for m in prompt) + REPLY_PRIMING
            verdict = cap_call(run.state, tokens, self._rates, cap)
            if isinstance(verdict, LimitExceeded):
                return verdict
            cap = verdict
        ask: Callable[..., Awaitable[ModelTurn]] = self.summarizer.respond
        respond = partial(watched, run, partial(ask, max_tokens=cap))  # bounded (run.watch)
        try:
            turn = await respond(prompt, [])
        except Exception as first:  # an adapter's ModelError has spent its own retries
            outcome = await attempt_again(
                respond, self.retry, None, (prompt, []), ModelError, first
            )
            if not outcome.ok:
                return RunFailed(
                    at=clock.now_us(),
                    code="model_error",
                    reason=f"the summariser failed after {outcome.attempts} attempt(s): "
                    f"{outcome.error}",
                )
            turn = outcome.value
        model = turn.model or self.summarizer.name
        seqs = await _origins(run)
        now = clock.now_us()
        return ContextSummarized(
            at=now,
            step=run.state.steps + 1,
            replaced=replaced,
            text=turn.text,
            first_seq=seqs[opening],
            last_seq=seqs[opening + replaced - 1],
            usage=spent(turn.usage),
            cost_nusd=self.prices.cost_nusd(model, turn.usage),
            model=model,
            latency_us=now - begin,
        )


async def _origins(run: AgentRun) -> list[int]:
    """The seq of the event behind each message of the run's transcript: its stored events
    and those not yet stored, folded again (only when a summary is made)."""
    runtime = run.log.runtime
    stored = await runtime.store.read(run.run_id)
    events = decode_run(stored, runtime.cipher) if stored else []
    return origins([*events, *run.pending])


def _render(previous: str, messages: Sequence[Message]) -> str:
    """The part of the conversation to condense, as plain text."""
    lines = [f"Summary so far:\n{previous}\n"] if previous else []
    lines.append("Conversation to condense:")
    for m in messages:
        if m.role == "tool":
            lines.append(f"[result of {m.name} {m.call_id}] {m.content}")
        else:
            calls = "".join(f" [calls {c.name}({c.arguments}) as {c.id}]" for c in m.tool_calls)
            lines.append(f"[{m.role}] {m.content}{calls}")
    return "\n".join(lines)
