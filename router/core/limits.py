"""Limit checks, the price table, the loop detector, and what a run hands down to the
child runs it starts. Pure: no clock, no I/O.

Agent runs and graph runs are both spend records (``Spent``: limits, steps, usage, cost,
start and last time) and both go through one check, ``check_spend``. A child run's budget is
what its parent has left when it starts (``Budget``), so a parent's ceiling binds its
children; what a child spends comes back to its parent through a ``Meter``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, final

import msgspec

from ..errors import ConfigError
from .events import NO_USAGE, LimitExceeded, Limits, ToolCall, Usage

__all__ = [
    "ANSWERABLE",
    "Budget",
    "Meter",
    "Price",
    "PriceTable",
    "Spent",
    "active_s",
    "budgeted",
    "call_signature",
    "cap_call",
    "check_spend",
    "forces_answer",
]


class Price(msgspec.Struct, frozen=True):
    """US dollars per million tokens, and optionally the model's context window (the tokens
    one call may hold, in and out) and its output reserve (the part of the window kept for
    the answer: the most tokens one answer may take, and what a context policy leaves free).
    """

    input_per_mtok: float
    output_per_mtok: float
    context_window: int | None = None
    output_reserve: int | None = None

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ConfigError(f"a price must not be negative: {self!r}")
        window, reserve = self.context_window, self.output_reserve
        if window is not None and window < 1 or reserve is not None and reserve < 1:
            raise ConfigError(f"a context window and an output reserve are positive: {self!r}")
        if window is not None and reserve is not None and reserve >= window:
            raise ConfigError(f"the output reserve must leave room in the window: {self!r}")


class PriceTable:
    """Per-model prices, context windows and output reserves; costs are integers in
    billionths of a dollar (nano-USD).

    An unknown model costs nothing unless ``strict`` is set, in which case pricing it
    is a configuration error. Under a cost ceiling every model that may answer must be
    priced, strict or not: a run refuses to start otherwise (``require``).
    """

    __slots__ = ("_nusd_per_token", "_strict", "_windows")

    def __init__(self, prices: Mapping[str, Price] | None = None, *, strict: bool = False) -> None:
        self._nusd_per_token: dict[str, tuple[int, int]] = {}
        self._windows: dict[str, tuple[int | None, int | None]] = {}
        for model, price in (prices or {}).items():
            # 1 USD per million tokens is 1,000 nano-USD per token.
            self._nusd_per_token[model] = (
                round(price.input_per_mtok * 1000),
                round(price.output_per_mtok * 1000),
            )
            if price.context_window is not None or price.output_reserve is not None:
                self._windows[model] = (price.context_window, price.output_reserve)
        self._strict = strict

    def rates(self) -> dict[str, Any]:
        """The table as nano-USD per input and output token, whether it is strict, and the
        windows where any is set."""
        table: dict[str, Any] = {
            "strict": self._strict,
            "nusd_per_token": {m: list(r) for m, r in self._nusd_per_token.items()},
        }
        if self._windows:
            table["windows"] = {m: list(w) for m, w in self._windows.items()}
        return table

    def cost_nusd(self, model: str, usage: Usage) -> int:
        rates = self._nusd_per_token.get(model)
        if rates is None:
            if self._strict:
                raise ConfigError(f"no price for model {model!r} in the price table")
            return 0
        return usage.input_tokens * rates[0] + usage.output_tokens * rates[1]

    def require(self, models: Sequence[str]) -> None:
        """Raise ConfigError unless every one of ``models`` is priced (under a cost ceiling,
        an unpriced model would cost $0 and the ceiling would never fire)."""
        missing = [m for m in models if m not in self._nusd_per_token]
        if missing:
            raise ConfigError(
                f"a cost ceiling needs a price for every model that may answer; "
                f"none for {', '.join(map(repr, missing))}"
            )

    def worst_rates(self, models: Sequence[str]) -> tuple[int, int]:
        """The highest nano-USD per input and per output token among ``models`` (unpriced:
        0): what the next call may cost per token, whichever of them answers."""
        rates = [self._nusd_per_token.get(m, (0, 0)) for m in models]
        return max(r[0] for r in rates), max(r[1] for r in rates)

    def window(self, models: Sequence[str]) -> tuple[int | None, int | None]:
        """The smallest context window and output reserve among ``models`` (None: unset)."""
        windows = [self._windows.get(m, (None, None)) for m in models]
        return _least([w[0] for w in windows]), _least([w[1] for w in windows])


def _least(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


_ANY_JSON = msgspec.json.Decoder()
_CANONICAL = msgspec.json.Encoder(order="sorted")


def call_signature(call: ToolCall) -> str:
    """What the loop detector compares: the tool and its arguments as canonical JSON (keys
    sorted, no spacing), so the same call written another way is still the same call;
    arguments that are not JSON compare as written."""
    try:
        arguments = _CANONICAL.encode(_ANY_JSON.decode(call.arguments)).decode()
    except (msgspec.DecodeError, UnicodeDecodeError):
        arguments = call.arguments
    return f"{call.name}\x00{arguments}"


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
    def paused_us(self) -> int: ...
    @property
    def last_at(self) -> int: ...
    @property
    def budgeted(self) -> bool: ...


# The limits at which a run with ``Limits.final_answer`` asks the model for a last answer:
# all but the clocks (when time is up, no call may be made).
ANSWERABLE = frozenset(
    {
        "max_steps",
        "max_tool_calls",
        "max_input_tokens",
        "max_output_tokens",
        "max_total_tokens",
        "max_cost_usd",
        "loop_detected",
        "max_rejected_calls",
        "max_failures_in_a_row",
    }
)


def forces_answer(limits: Limits, limit: str) -> bool:
    """Whether reaching ``limit`` makes the run ask the model for a final answer."""
    return limits.final_answer and limit in ANSWERABLE


def check_spend(state: Spent, stepping: bool, keep: int = 0) -> LimitExceeded | None:
    """The first of the run's deadline, cost ceiling and token limits it has crossed, and
    its step limit when it is about to take a step (``stepping``), ``keep`` steps short of
    it (kept for a final answer); None if none."""
    limits = state.limits
    if state.budgeted:  # most runs set no deadline, cost or token limit
        if limits.deadline_s is not None:
            elapsed = active_s(state)
            if elapsed > limits.deadline_s:
                return LimitExceeded(
                    at=state.last_at, limit="deadline", value=elapsed, ceiling=limits.deadline_s
                )
        if limits.expires_at is not None and state.last_at / 1e6 > limits.expires_at:
            return LimitExceeded(
                at=state.last_at,
                limit="expires_at",
                value=state.last_at / 1e6,
                ceiling=limits.expires_at,
            )
        exceeded = _check_budgets(state)
        if exceeded is not None:
            return exceeded
    if stepping and state.steps >= limits.max_steps - keep:
        return LimitExceeded(
            at=state.last_at,
            limit="max_steps",
            value=state.steps,
            ceiling=limits.max_steps,
            detail="the last step is kept for the final answer" if keep else "",
        )
    return None


def cap_call(
    state: Spent, input_tokens: int, rates: tuple[int, int], reserve: int | None
) -> int | None | LimitExceeded:
    """The spend check before a model call: the most output tokens the call may take so
    that its worst case (``input_tokens`` in, an upper bound, and that many out, at the
    nano-USD ``rates`` per input and output token) stays within what the run has left of
    every token and cost ceiling; the model's output ``reserve`` caps it too. None: nothing
    caps it. LimitExceeded, before anything is spent, when not even one output token fits.
    """
    if not state.budgeted:
        return reserve
    left, usage, limits = Budget.left(state), state.usage, state.limits
    if left.input_tokens is not None and input_tokens > left.input_tokens:
        return LimitExceeded(
            at=state.last_at,
            limit="max_input_tokens",
            value=usage.input_tokens + input_tokens,
            ceiling=limits.max_input_tokens or 0,
        )
    caps: list[tuple[int, str]] = []
    if reserve is not None:
        caps.append((reserve, ""))
    if left.output_tokens is not None:
        caps.append((left.output_tokens, "max_output_tokens"))
    if left.total_tokens is not None:
        caps.append((left.total_tokens - input_tokens, "max_total_tokens"))
    if left.cost_nusd is not None:
        after_input = left.cost_nusd - input_tokens * rates[0]
        if rates[1]:
            caps.append((after_input // rates[1], "max_cost_usd"))
        elif after_input < 0:
            caps.append((-1, "max_cost_usd"))
    if not caps:
        return None
    cap, limit = min(caps)
    if cap >= 1:
        return cap
    return _exceeded_by_one_token(state, limit, input_tokens, rates)


def _exceeded_by_one_token(
    state: Spent, limit: str, input_tokens: int, rates: tuple[int, int]
) -> LimitExceeded:
    """The ceiling a call of ``input_tokens`` and one output token would pass."""
    usage, limits = state.usage, state.limits
    value: float
    if limit == "max_cost_usd":
        value = (state.cost_nusd + input_tokens * rates[0] + rates[1]) / 1e9
    elif limit == "max_total_tokens":
        value = usage.total_tokens + input_tokens + 1
    else:
        value = usage.output_tokens + 1
    return LimitExceeded(at=state.last_at, limit=limit, value=value, ceiling=getattr(limits, limit))


def active_s(state: Spent, now_us: int | None = None) -> float:
    """Seconds the run has been active (advancing, not parked waiting for a person, a
    decision or a resume) until ``now_us`` (its last event by default)."""
    end = state.last_at if now_us is None else now_us
    return (end - state.started_at - state.paused_us) / 1e6


def budgeted(limits: Limits) -> bool:
    """Whether the limits set a deadline, an expiry, a cost ceiling or a token limit."""
    return (
        limits.deadline_s is not None
        or limits.expires_at is not None
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
            deadline = max(0.0, limits.deadline_s - active_s(state))
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
