"""Multi-model routing: a policy picks the model for each call, and the run's log records
every candidate it considered and why (a ``model_routed`` event before the answer).

``ModelRouter`` is itself a Model. For each call it plans an order over its candidates,
deterministically (the same candidates, breaker states and clock give the same order):

- ``strategy="ordered"``: the declared order, falling back to the next candidate on an
  error or a timeout;
- ``strategy="cheapest"``: the cheapest candidates first, by their price per million
  tokens (input plus output; ties keep the declared order), falling back the same way.

A candidate is skipped, with the reason recorded, when it lacks a required capability
(``"tools"`` whenever the run offers tools, plus ``require``), when its expected latency
exceeds the latency budget, or when its circuit breaker is open. The latency budget also
bounds the whole call: each attempt's timeout is what remains of it. A breaker opens after
``failures_to_open`` failures in a row and lets one trial call through after ``cooldown_s``.
When no candidate answers, ``ModelUnavailable`` carries the attempts, and the run records
them before it fails.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Literal, final

import anyio
import msgspec

from ..core.clock import Clock
from ..core.events import Message, RouteAttempt
from ..core.limits import Price
from ..core.protocols import Model, ModelTurn, accepts_max_tokens
from ..errors import ConfigError, ModelUnavailable

__all__ = ["Breaker", "Candidate", "ModelRouter"]


class Breaker(msgspec.Struct, frozen=True):
    """When a model's circuit opens (failures in a row) and for how long it stays open."""

    failures_to_open: int = 3
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures_to_open < 1 or self.cooldown_s < 0:
            raise ConfigError(f"invalid breaker {self!r}")


_DEFAULT_BREAKER = Breaker()  # frozen, so one instance serves every router


@final
class Candidate:
    """A model the router may choose, with what it can do and what it costs."""

    __slots__ = ("model", "capabilities", "price", "expected_latency_s", "timeout_s")

    def __init__(
        self,
        model: Model,
        *,
        capabilities: Iterable[str] = ("tools",),
        price: Price | None = None,
        expected_latency_s: float | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.model = model
        # "max_tokens": it can cap an answer's length, which a run under a ceiling needs
        self.capabilities = frozenset(capabilities) | (
            {"max_tokens"} if accepts_max_tokens(model) else frozenset()
        )
        self.price = price
        self.expected_latency_s = expected_latency_s
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def rate(self) -> float:
        """Dollars per million tokens, input plus output; unpriced models sort last."""
        return (
            self.price.input_per_mtok + self.price.output_per_mtok if self.price else float("inf")
        )


class _Circuit:
    """Closed (open_until_us == 0), open (until then), or half-open once that has passed:
    one trial call goes through, and its outcome closes or reopens the circuit."""

    __slots__ = ("failures", "open_until_us", "trial")

    def __init__(self) -> None:
        self.failures = 0
        self.open_until_us = 0
        self.trial = False  # a half-open circuit's trial call is in flight


@final
class ModelRouter:
    """A Model that routes each call to one of several candidates; see the module docs."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        strategy: Literal["ordered", "cheapest"] = "ordered",
        require: Iterable[str] = (),
        latency_budget_s: float | None = None,
        breaker: Breaker = _DEFAULT_BREAKER,
        clock: Clock | None = None,
        name: str = "model-router",
    ) -> None:
        if not candidates:
            raise ConfigError("a model router needs at least one candidate")
        names = [c.name for c in candidates]
        if len(set(names)) != len(names):
            raise ConfigError(f"candidate models must have distinct names, not {names}")
        if strategy not in ("ordered", "cheapest"):
            raise ConfigError(f"unknown routing strategy {strategy!r}")
        self.name = name
        self.candidates = tuple(candidates)
        self.strategy = strategy
        self.require = frozenset(require)
        self.latency_budget_s = latency_budget_s
        self.breaker = breaker
        self.clock = clock or _WallClock()
        self._circuits = {c.name: _Circuit() for c in candidates}
        self.models = tuple(names)  # the models that may answer: each must be priced

    def plan(self, needs: frozenset[str]) -> list[tuple[Candidate, str, str]]:
        """The candidates in the order they will be tried: (candidate, why it is tried,
        why it is skipped or ""). Pure given the breakers' state and the clock."""
        order = list(self.candidates)
        if self.strategy == "cheapest":
            order.sort(key=lambda c: c.rate)  # stable: ties keep the declared order
        now = self.clock.now_us()
        out: list[tuple[Candidate, str, str]] = []
        for rank, c in enumerate(order, 1):
            why = (
                f"cheapest {rank} of {len(order)}"
                if self.strategy == "cheapest"
                else f"fallback {rank} of {len(order)}"
            )
            out.append((c, why, self._skip(c, needs, now)))
        return out

    def _skip(self, c: Candidate, needs: frozenset[str], now_us: int) -> str:
        missing = needs - c.capabilities
        if missing:
            return f"lacks {', '.join(sorted(missing))}"
        budget = self.latency_budget_s
        if (
            budget is not None
            and c.expected_latency_s is not None
            and c.expected_latency_s > budget
        ):
            return f"expected latency {c.expected_latency_s:g} s exceeds the {budget:g} s budget"
        circuit = self._circuits[c.name]
        if circuit.open_until_us > now_us:
            return f"circuit open for {(circuit.open_until_us - now_us) / 1e6:.1f} s more"
        if circuit.trial:
            return "circuit half-open: its trial call is in flight"
        return ""

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        needs = self.require | ({"tools"} if tools else frozenset())
        capped = {} if max_tokens is None else {"max_tokens": max_tokens}
        if capped:  # a candidate that cannot cap its answer could pass the run's ceiling
            needs |= {"max_tokens"}
        start = self.clock.now_us()
        attempts: list[RouteAttempt] = []
        for c, why, skip in self.plan(needs):
            timeout = self._timeout(c, start)
            if not skip and timeout is not None and timeout <= 0:
                skip = "the latency budget is spent"
            if skip:
                attempts.append(
                    RouteAttempt(model=c.name, reason=why, outcome="skipped", detail=skip)
                )
                continue
            ask = partial(c.model.respond, messages, tools, **capped)
            turn, attempt = await self._try(c, why, timeout, ask)
            attempts.append(attempt)
            if turn is not None:
                return msgspec.structs.replace(
                    turn, model=turn.model or c.name, route=tuple(attempts)
                )
        raise ModelUnavailable(
            self.name,
            "no candidate model answered: "
            + "; ".join(
                f"{a.model} {a.outcome}{': ' + a.detail if a.detail else ''}" for a in attempts
            ),
            attempts=len(attempts),
            route=tuple(attempts),
        )

    async def _try(
        self,
        c: Candidate,
        why: str,
        timeout: float | None,
        ask: Callable[[], Awaitable[ModelTurn]],
    ) -> tuple[ModelTurn | None, RouteAttempt]:
        """One candidate's attempt, within ``timeout``: its turn (None if it gave none) and
        the attempt as the log records it; its circuit learns the outcome."""
        circuit = self._circuits[c.name]
        circuit.trial = circuit.open_until_us != 0  # half-open: this call is the trial
        begin = self.clock.now_us()
        turn: ModelTurn | None = None
        error = ""
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            try:
                turn = await ask()
            except Exception as exc:  # the next candidate gets its chance; the error is recorded
                error = f"{type(exc).__name__}: {exc}"
            except BaseException:  # the caller was cancelled: the trial did not happen
                circuit.trial = False
                raise
        latency = self.clock.now_us() - begin
        if turn is None:
            self._failed(circuit)
            timed_out = scope.cancelled_caught
            if timed_out and timeout is not None:
                error = f"no answer within {timeout:g} s"
            return None, RouteAttempt(
                model=c.name,
                reason=why,
                outcome="timed_out" if timed_out else "failed",
                detail=error,
                latency_us=latency,
            )
        circuit.failures, circuit.open_until_us, circuit.trial = 0, 0, False
        return turn, RouteAttempt(model=c.name, reason=why, outcome="answered", latency_us=latency)

    def _timeout(self, c: Candidate, start_us: int) -> float | None:
        limits = [t for t in (c.timeout_s,) if t is not None]
        if self.latency_budget_s is not None:
            limits.append(self.latency_budget_s - (self.clock.now_us() - start_us) / 1e6)
        return min(limits) if limits else None

    def _failed(self, circuit: _Circuit) -> None:
        circuit.failures += 1
        circuit.trial = False
        if circuit.failures >= self.breaker.failures_to_open:
            circuit.open_until_us = self.clock.now_us() + int(self.breaker.cooldown_s * 1e6)
            circuit.failures = (
                self.breaker.failures_to_open - 1
            )  # one more failure after the cooldown reopens it

    async def aclose(self) -> None:
        for c in self.candidates:
            close = getattr(c.model, "aclose", None)
            if close is not None:
                await close()


@final
class _WallClock:
    """The default clock of a routing policy: the system's, in microseconds."""

    def now_us(self) -> int:
        return time.time_ns() // 1000
