"""Limit checks, the price table and the loop detector. Pure: no clock, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigError
from .events import LimitExceeded, Limits, ToolCall, Usage

if TYPE_CHECKING:
    from .fsm import RunState

__all__ = ["Price", "PriceTable", "budgeted", "call_signature", "check_limits"]


class Price(msgspec.Struct, frozen=True):
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


class PriceTable:
    """Per-model prices; costs are integers in billionths of a dollar (nano-USD).

    An unknown model costs nothing unless ``strict`` is set, in which case pricing it
    is a configuration error: a cost ceiling is only as good as its price table.
    """

    __slots__ = ("_nusd_per_token", "_strict")

    def __init__(self, prices: Mapping[str, Price] | None = None, *, strict: bool = False) -> None:
        self._nusd_per_token: dict[str, tuple[int, int]] = {}
        for model, price in (prices or {}).items():
            if price.input_per_mtok < 0 or price.output_per_mtok < 0:
                raise ConfigError(f"price of model {model!r} is negative")
            # 1 USD per million tokens is 1,000 nano-USD per token.
            self._nusd_per_token[model] = (
                round(price.input_per_mtok * 1000),
                round(price.output_per_mtok * 1000),
            )
        self._strict = strict

    def rates(self) -> dict[str, Any]:
        """The table as nano-USD per input and output token, and whether it is strict."""
        return {"strict": self._strict, "nusd_per_token": {m: list(r) for m, r in self._nusd_per_token.items()}}

    def cost_nusd(self, model: str, usage: Usage) -> int:
        rates = self._nusd_per_token.get(model)
        if rates is None:
            if self._strict:
                raise ConfigError(f"no price for model {model!r} in the price table")
            return 0
        return usage.input_tokens * rates[0] + usage.output_tokens * rates[1]


def call_signature(call: ToolCall) -> str:
    return f"{call.name}\x00{call.arguments}"


def check_limits(state: RunState, fresh: Sequence[ToolCall] = ()) -> LimitExceeded | None:
    """The first limit the state has crossed, as the event that records it, or None.

    fresh: in running_tools, the turn's calls never decided before (``fsm.next_effect``
    finds them as it reads the turn); the proposal limits check them.
    """
    limits = state.limits
    if state.budgeted and limits.deadline_s is not None:  # most runs set no deadline, cost or token limit
        elapsed = (state.last_at - state.started_at) / 1e6
        if elapsed > limits.deadline_s:
            return LimitExceeded(at=state.last_at, limit="deadline", value=elapsed, ceiling=limits.deadline_s)
    if state.timed_out:
        return LimitExceeded(
            at=state.last_at, limit="tool_timeout", value=1, ceiling=limits.tool_timeout_s or 0,
            detail=f"call {state.timed_out} timed out on every attempt",
        )
    if state.budgeted:
        exceeded = _check_budgets(state)
        if exceeded is not None:
            return exceeded
    phase = state.phase
    if phase == "awaiting_model":
        if state.steps >= limits.max_steps:
            return LimitExceeded(at=state.last_at, limit="max_steps", value=state.steps, ceiling=limits.max_steps)
    elif phase == "running_tools":
        if fresh:
            exceeded = _check_proposals(state, fresh)
            if exceeded is not None:
                return exceeded
    if state.rejected > limits.max_rejected_calls:
        return LimitExceeded(
            at=state.last_at, limit="max_rejected_calls", value=state.rejected, ceiling=limits.max_rejected_calls,
            detail="the model kept proposing calls that were invalid, unknown or denied",
        )
    return None


def budgeted(limits: Limits) -> bool:
    """Whether the limits set a deadline, a cost ceiling or a token limit."""
    return limits.deadline_s is not None or limits.max_cost_usd is not None or (
        limits.max_total_tokens is not None or limits.max_input_tokens is not None
        or limits.max_output_tokens is not None
    )


def _check_budgets(state: RunState) -> LimitExceeded | None:
    """The cost ceiling and the token limits, in that order."""
    limits, usage, at = state.limits, state.usage, state.last_at
    if limits.max_cost_usd is not None and state.cost_nusd > round(limits.max_cost_usd * 1e9):
        return LimitExceeded(at=at, limit="max_cost_usd", value=state.cost_nusd / 1e9, ceiling=limits.max_cost_usd)
    if limits.max_total_tokens is not None and usage.total_tokens > limits.max_total_tokens:
        return LimitExceeded(at=at, limit="max_total_tokens", value=usage.total_tokens, ceiling=limits.max_total_tokens)
    if limits.max_input_tokens is not None and usage.input_tokens > limits.max_input_tokens:
        return LimitExceeded(at=at, limit="max_input_tokens", value=usage.input_tokens, ceiling=limits.max_input_tokens)
    if limits.max_output_tokens is not None and usage.output_tokens > limits.max_output_tokens:
        return LimitExceeded(
            at=at, limit="max_output_tokens", value=usage.output_tokens, ceiling=limits.max_output_tokens
        )
    return None


def _check_proposals(state: RunState, fresh: Sequence[ToolCall]) -> LimitExceeded | None:
    """Limits that a model turn's new calls cross before any of them runs."""
    limits, at = state.limits, state.last_at
    proposed = state.tool_calls + len(fresh)
    if proposed > limits.max_tool_calls:
        return LimitExceeded(
            at=at, limit="max_tool_calls", value=proposed, ceiling=limits.max_tool_calls,
            detail=f"{len(fresh)} calls proposed with {state.tool_calls} already made",
        )
    window = state.recent_calls
    for call in fresh:
        repeats = window.count(call_signature(call))
        if repeats >= limits.max_repeats:
            return LimitExceeded(
                at=at, limit="loop_detected", value=repeats, ceiling=limits.max_repeats,
                detail=f"tool {call.name!r} proposed with the same arguments {repeats} times "
                f"in the last {limits.loop_window} calls",
            )
    return None
