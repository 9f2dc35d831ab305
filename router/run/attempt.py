"""The one attempt loop: a timeout per attempt and the deterministic retry schedule, for
tools and graph nodes alike. A failure is an outcome, never an exception: the engine
records it as an event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, final

import anyio

from ..core.tools import Retry

__all__ = ["Attempted", "attempt"]


@final
class Attempted:
    """How the attempts went: the value of the one that succeeded, or every error."""

    __slots__ = ("value", "ok", "attempts", "error", "timed_out")

    def __init__(self, value: Any, ok: bool, attempts: int, error: str = "", timed_out: bool = False) -> None:
        self.value, self.ok, self.attempts, self.error, self.timed_out = value, ok, attempts, error, timed_out


async def attempt(call: Callable[[], Awaitable[Any]], retry: Retry, timeout_s: float | None) -> Attempted:
    """Await ``call()`` until it returns, at most ``retry.attempts`` times, each attempt
    within ``timeout_s`` (None: no limit), waiting ``retry.delay_before(n)`` before
    attempt n. An exception or a timeout is an attempt that failed; a cancellation of
    the caller is not, and propagates."""
    errors: list[str] = []
    timeouts = 0
    for n in range(1, retry.attempts + 1):
        if n > 1:
            await anyio.sleep(retry.delay_before(n))
        try:
            if timeout_s is None:
                value = await call()
            else:
                with anyio.fail_after(timeout_s):
                    value = await call()
        except Exception as exc:  # a failure of the user's code is recorded, never raised
            if isinstance(exc, TimeoutError) and timeout_s is not None:
                timeouts += 1
                errors.append(f"timed out after {timeout_s:g} s")
            else:
                errors.append(f"{type(exc).__name__}: {exc}")
            continue
        return Attempted(value, True, n)
    return Attempted(None, False, retry.attempts, "; ".join(errors), timeouts == retry.attempts)
