"""The one attempt loop: a timeout per attempt and the deterministic retry schedule, for
tools, graph nodes and model calls alike. A failure is an outcome, never an exception: the
engine records it as an event. And the one reading of a run's deadline while router waits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from ..core.clock import Clock
from ..core.events import LimitExceeded
from ..core.limits import Spent, active_s
from ..core.tools import Retry

__all__ = ["Attempted", "attempt", "attempt_again", "deadline_passed", "time_left"]


class Attempted(msgspec.Struct, gc=False):
    """How the attempts went: the value of the one that succeeded, or every error and the
    last exception."""

    value: Any
    ok: bool
    attempts: int
    error: str = ""
    timed_out: bool = False
    exception: Any = None  # the last exception, when every attempt failed


async def attempt(
    call: Callable[..., Awaitable[Any]],
    retry: Retry,
    timeout_s: float | None,
    *args: Any,
    final: type[Exception] | None = None,
) -> Attempted:
    """Await ``call(*args)`` until it returns, at most ``retry.attempts`` times, each attempt
    within ``timeout_s`` (None: no limit), waiting ``retry.delay_before(n)`` before
    attempt n. An exception or a timeout is an attempt that failed; an exception of type
    ``final`` (one that has spent its own retries) ends the attempts at once. A
    cancellation of the caller is not a failure, and propagates."""
    try:  # the first attempt, on every step's path: nothing is gathered unless it fails
        if timeout_s is None:
            value = await call(*args)
        else:
            with anyio.fail_after(timeout_s):
                value = await call(*args)
    except Exception as exc:  # a failure of the user's code is recorded, never raised
        return await attempt_again(call, retry, timeout_s, args, final, exc)
    return Attempted(value, True, 1)


async def attempt_again(
    call: Callable[..., Awaitable[Any]],
    retry: Retry,
    timeout_s: float | None,
    args: tuple[Any, ...],
    final: type[Exception] | None,
    first: Exception,
) -> Attempted:
    """The attempts after a first that failed with ``first`` (the caller made it: on the
    path of every step, a first attempt needs no loop)."""
    errors: list[str] = []
    timeouts = 0
    last = first
    for n in range(1, retry.attempts + 1):
        if n > 1:
            await anyio.sleep(retry.delay_before(n))
            try:
                if timeout_s is None:
                    return Attempted(await call(*args), True, n)
                with anyio.fail_after(timeout_s):
                    return Attempted(await call(*args), True, n)
            except Exception as exc:  # a failure of the user's code is recorded, never raised
                last = exc
        if isinstance(last, TimeoutError) and timeout_s is not None:
            timeouts += 1
            errors.append(f"timed out after {timeout_s:g} s")
        else:
            errors.append(f"{type(last).__name__}: {last}")
        if final is not None and isinstance(last, final):
            return Attempted(None, False, n, "; ".join(errors), False, last)
    return Attempted(
        None, False, retry.attempts, "; ".join(errors), timeouts == retry.attempts, last
    )


def time_left(clock: Clock, state: Spent) -> float:
    """Seconds until the run's deadline (its active time) or its expiry on ``clock``,
    whichever comes first (inf without either): what a wait for the model, a turn's tools
    or a graph step may take."""
    limits = state.limits
    left = float("inf")
    if limits.deadline_s is not None or limits.expires_at is not None:
        now = clock.now_us()
        if limits.deadline_s is not None:
            left = limits.deadline_s - active_s(state, now)
        if limits.expires_at is not None:
            left = min(left, limits.expires_at - now / 1e6)
    return left


def deadline_passed(clock: Clock, state: Spent) -> LimitExceeded:
    """The event that records a deadline (or an expiry) that passed while router waited."""
    now, limits = clock.now_us(), state.limits
    if limits.expires_at is not None and now / 1e6 >= limits.expires_at:
        value, limit, ceiling = now / 1e6, "expires_at", limits.expires_at
    else:
        value, limit, ceiling = active_s(state, now), "deadline", limits.deadline_s or 0
    return LimitExceeded(
        at=now,
        limit=limit,
        value=value,
        ceiling=ceiling,
        detail=("the run expired" if limit == "expires_at" else "the deadline passed")
        + " while router waited",
    )
