"""Limit checks, the price table, the loop detector, and what a run hands down to the
child runs it starts. Pure: no clock, no I/O.

Agent runs and graph runs are both spend records (``Spent``: limits, steps, usage, cost,
start and last time) and both go through one check, ``check_spend``. A child run's budget is
what its parent has left when it starts (``Budget``), so a parent's ceiling binds its
children; what a child spends comes back to its parent through a ``Meter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, final

import msgspec

from ..errors import ConfigError
from .events import NO_USAGE, LimitExceeded, Limits, ToolCall, Usage

__all__ = [
    "Budget",
    "Meter",
    "Price",
    "PriceTable",
    "Spent",
    "budgeted",
    "call_signature",
    "check_spend",
]


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
        return {
            "strict": self._strict,
            "nusd_per_token": {m: list(r) for m, r in self._nusd_per_token.items()},
        }

    def cost_nusd(self, model: str, usage: Usage) -> int:
        rates = self._nusd_per_token.get(model)
        if rates is None:
            if self._strict:
                raise ConfigError(f"no price for model {model!r} in the price table")
            return 0
        return usage.input_tokens * rates[0] + usage.output_tokens * rates[1]


def call_signature(call: ToolCall) -> str:
    return f"{call.name}\x00{call.arguments}"


class Spent(Protocol):
    """What any run has spent, as the one limit check reads it."""

    @property
    def limits(self) -> Limits: ...
    @property
    def steps(self) -> int: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cost_nusd(self) -> int: ...
    @property
    def started_at(self) -> int: ...
    @property
    def last_at(self) -> int: ...
    @property
    def budgeted(self) -> bool: ...


def check_spend(state: Spent, stepping: bool) -> LimitExceeded | None:
    """The first of the run's deadline, cost ceiling and token limits it has crossed, and
    its step limit when it is about to take a step (``stepping``); None if none."""
    limits = state.limits
    if state.budgeted:  # most runs set no deadline, cost or token limit
        if limits.deadline_s is not None:
            elapsed = (state.last_at - state.started_at) / 1e6
            if elapsed > limits.deadline_s:
                return LimitExceeded(
                    at=state.last_at, limit="deadline", value=elapsed, ceiling=limits.deadline_s
                )
        exceeded = _check_budgets(state)
        if exceeded is not None:
            return exceeded
    if stepping and state.steps >= limits.max_steps:
        return LimitExceeded(
            at=state.last_at, limit="max_steps", value=state.steps, ceiling=limits.max_steps
        )
    return None


def budgeted(limits: Limits) -> bool:
    """Whether the limits set a deadline, a cost ceiling or a token limit."""
    return (
        limits.deadline_s is not None
        or limits.max_cost_usd is not None
        or (
            limits.max_total_tokens is not None
            or limits.max_input_tokens is not None
            or limits.max_output_tokens is not None
        )
    )


def _check_budgets(state: Spent) -> LimitExceeded | None:
    """The cost ceiling and the token limits, in that order."""
    limits, usage, at = state.limits, state.usage, state.last_at
    if limits.max_cost_usd is not None and state.cost_nusd > round(limits.max_cost_usd * 1e9):
        return LimitExceeded(
            at=at, limit="max_cost_usd", value=state.cost_nusd / 1e9, ceiling=limits.max_cost_usd
        )
    if limits.max_total_tokens is not None and usage.total_tokens > limits.max_total_tokens:
        return LimitExceeded(
            at=at,
            limit="max_total_tokens",
            value=usage.total_tokens,
            ceiling=limits.max_total_tokens,
        )
    if limits.max_input_tokens is not None and usage.input_tokens > limits.max_input_tokens:
        return LimitExceeded(
            at=at,
            limit="max_input_tokens",
            value=usage.input_tokens,
            ceiling=limits.max_input_tokens,
        )
    if limits.max_output_tokens is not None and usage.output_tokens > limits.max_output_tokens:
        return LimitExceeded(
            at=at,
            limit="max_output_tokens",
            value=usage.output_tokens,
            ceiling=limits.max_output_tokens,
        )
    return None


def _rest(ceiling: int | None, used: int, share: int = 1) -> int | None:
    """What is left of a ceiling (None: no ceiling) once ``used`` is spent, split ``share`` ways."""
    return None if ceiling is None else max(0, ceiling - used) // share


class Budget(msgspec.Struct, frozen=True, gc=False):
    """What a run has left to hand down to a child run it starts: None where it sets no
    ceiling. A child's limits are its own, lowered to these (``bind``)."""

    cost_nusd: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    deadline_s: float | None = None

    @classmethod
    def left(cls, state: Spent, share: int = 1) -> Budget:
        """What ``state`` has left, split evenly among ``share`` children started at once."""
        limits, usage = state.limits, state.usage
        if not state.budgeted:
            return _UNBOUNDED

        cost = None if limits.max_cost_usd is None else round(limits.max_cost_usd * 1e9)
        deadline = None
        if limits.deadline_s is not None:
            deadline = max(0.0, limits.deadline_s - (state.last_at - state.started_at) / 1e6)
        return cls(
            cost_nusd=_rest(cost, state.cost_nusd, share),
            input_tokens=_rest(limits.max_input_tokens, usage.input_tokens, share),
            output_tokens=_rest(limits.max_output_tokens, usage.output_tokens, share),
            total_tokens=_rest(limits.max_total_tokens, usage.total_tokens, share),
            deadline_s=deadline,
        )

    @property
    def exhausted(self) -> str:
        """The ceiling with nothing left, "" if every one has something left: a child is not
        started on an exhausted budget (it would spend a model call it has no room for)."""
        if self is _UNBOUNDED:
            return ""
        for name in ("cost_nusd", "input_tokens", "output_tokens", "total_tokens", "deadline_s"):
            left = getattr(self, name)
            if left is not None and left <= 0:
                return name
        return ""

    def after(self, meter: Meter | None) -> Budget:
        """What is left of this budget once ``meter``'s children have spent (children
        started one after another share one budget)."""
        if meter is None or meter.empty or self == _UNBOUNDED:
            return self
        usage = meter.usage

        return Budget(
            cost_nusd=_rest(self.cost_nusd, meter.cost_nusd),
            input_tokens=_rest(self.input_tokens, usage.input_tokens),
            output_tokens=_rest(self.output_tokens, usage.output_tokens),
            total_tokens=_rest(self.total_tokens, usage.total_tokens),
            deadline_s=self.deadline_s,
        )

    def bind(self, limits: Limits) -> Limits:
        """``limits`` with every ceiling lowered to what this budget allows."""
        if self == _UNBOUNDED:
            return limits
        cost = None if self.cost_nusd is None else self.cost_nusd / 1e9
        return msgspec.structs.replace(
            limits,
            max_cost_usd=_lower(limits.max_cost_usd, cost),
            max_input_tokens=_lower(limits.max_input_tokens, self.input_tokens),
            max_output_tokens=_lower(limits.max_output_tokens, self.output_tokens),
            max_total_tokens=_lower(limits.max_total_tokens, self.total_tokens),
            deadline_s=_lower(limits.deadline_s, self.deadline_s),
        )


_UNBOUNDED = Budget()


def _lower(own: Any, allowed: Any) -> Any:
    return allowed if own is None else own if allowed is None else min(own, allowed)


@final
class Meter:
    """What the child runs of one tool call or graph task spent, reported back to the run
    that started them and recorded in the event that ends the call or task. A child reports
    its whole spend each time it returns (``report``): a child resumed by a retry replaces
    its earlier report rather than adding to it. Other spend (``add``) accumulates."""

    __slots__ = ("_children", "usage", "cost_nusd", "child_run_id")

    def __init__(self) -> None:
        self._children: dict[str, tuple[Usage, int]] = {}
        self.usage, self.cost_nusd = NO_USAGE, 0  # the totals
        self.child_run_id = ""  # the first child reported

    @property
    def empty(self) -> bool:
        return not self.cost_nusd and self.usage is NO_USAGE and not self.child_run_id

    def report(self, child_run_id: str, usage: Usage, cost_nusd: int) -> None:
        """The child run's whole spend so far."""
        before_usage, before_cost = self._children.get(child_run_id, (NO_USAGE, 0))
        self._children[child_run_id] = (usage, cost_nusd)
        self.child_run_id = self.child_run_id or child_run_id
        self._total(
            usage.input_tokens - before_usage.input_tokens,
            usage.output_tokens - before_usage.output_tokens,
            cost_nusd - before_cost,
        )

    def add(self, usage: Usage, cost_nusd: int) -> None:
        self._total(usage.input_tokens, usage.output_tokens, cost_nusd)

    def _total(self, input_tokens: int, output_tokens: int, cost_nusd: int) -> None:
        self.cost_nusd += cost_nusd
        if input_tokens or output_tokens:
            used = self.usage
            total_in, total_out = (
                used.input_tokens + input_tokens,
                used.output_tokens + output_tokens,
            )
            self.usage = (
                Usage(input_tokens=total_in, output_tokens=total_out)
                if total_in or total_out
                else NO_USAGE
            )
