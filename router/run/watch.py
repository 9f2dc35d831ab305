"""The watch on a runtime's model calls: every call to a model (the answering model, its
retries, a summariser) is bounded by the run's ``Limits.model_timeout_s``, so a model that
never answers cannot hang a run.

A timer per call would cost more than the rest of a step's orchestration, so the calls are
watched instead: a call marks on its run when it must end (``watched``), and one patrol task
per runtime looks at the runs it advances every eighth of the shortest timeout among them
(it ends after a round with none, so a runtime that advances runs one after another keeps
one patrol). A call past its end has its driving task cancelled; the call turns that
cancellation back into a ``TimeoutError`` that names the timeout, an attempt that failed
like any other. A call therefore ends between its timeout and an eighth more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, final

__all__ = ["CallWatch", "Watched", "watched"]

T = TypeVar("T")

_MIN_TICK_S = 0.005


class Watched(Protocol):
    """A run whose model calls are watched (the agent engine's ``AgentRun``)."""

    task: asyncio.Task[Any] | None  # the task driving the run, while it is watched
    model_timeout_s: float  # its Limits.model_timeout_s, while it is watched
    asking_until: float  # perf_counter time the current model call must end by; 0: none
    timed_out: bool  # the watch cancelled the current call


async def watched(run: Watched, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``call(*args)``, a call to a model, ended with a ``TimeoutError`` once the run's
    model timeout has passed."""
    if run.task is None:  # not watched: the run has no model timeout
        return await call(*args)
    timeout = run.model_timeout_s
    run.asking_until = time.perf_counter() + timeout
    try:
        answer = await call(*args)
    except asyncio.CancelledError:
        if not run.timed_out:
            raise  # a cancellation of the run itself
        _forgive(run)
        raise TimeoutError(
            f"the model did not answer within {timeout:g} s (Limits.model_timeout_s)"
        ) from None
    finally:
        run.asking_until = 0.0
    if run.timed_out:  # the call swallowed the cancellation and answered: take the answer
        _forgive(run)
    return answer


def _forgive(run: Watched) -> None:
    """Take back the watch's cancellation of the run's task."""
    run.timed_out = False
    if run.task is not None:
        run.task.uncancel()


@final
class CallWatch:
    """The patrol over the model calls of the runs one runtime advances."""

    __slots__ = ("_runs", "_task", "_tick", "_nap", "timeouts")

    def __init__(self) -> None:
        self._runs: dict[Watched, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._tick = float("inf")
        self._nap: asyncio.Future[None] | None = None
        self.timeouts = 0  # calls the watch ended, for tests

    def watch(self, run: Watched, timeout: float | None) -> None:
        """Watch ``run``'s model calls, each to end within ``timeout`` (None: no timeout),
        while it is advanced by the current task."""
        if timeout is None:
            return
        run.task, run.model_timeout_s = asyncio.current_task(), timeout
        self._runs[run] = None
        tick = max(_MIN_TICK_S, timeout / 8)
        if tick < self._tick:
            self._tick = tick
            _wake(self._nap)  # a patrol asleep for longer looks again now
        task = self._task
        if task is None or task.done():
            # A task of its own: a run's driver must not wait for it, nor cancel it.
            self._task = asyncio.get_running_loop().create_task(self._patrol())

    def unwatch(self, run: Watched) -> None:
        if self._runs.pop(run, 0) is None:
            run.task = None

    async def _patrol(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:  # a round, then a look; it ends after a round with no run watched
                self._nap = nap = loop.create_future()
                wake = loop.call_later(self._tick, _wake, nap)
                try:
                    await nap
                finally:
                    wake.cancel()
                if not self._runs:
                    break
                self._look(time.perf_counter())
        except asyncio.CancelledError:  # the event loop is shutting down
            return
        finally:
            self._tick = float("inf")

    def _look(self, now: float) -> None:
        """Cancel the calls past their end; set the next round's tick from the runs left."""
        tick = float("inf")
        for run in self._runs:
            until = run.asking_until
            if until and now >= until and not run.timed_out and run.task is not None:
                run.timed_out = True
                self.timeouts += 1
                run.task.cancel("the model call timed out")
            tick = min(tick, max(_MIN_TICK_S, run.model_timeout_s / 8))
        self._tick = tick


def _wake(nap: asyncio.Future[None] | None) -> None:
    if nap is not None and not nap.done():
        nap.set_result(None)
