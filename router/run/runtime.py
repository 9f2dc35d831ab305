"""Where runs execute: the store, the clock and ids, this process's name in leases, the
cipher and the observers. Every kind of run (agent, graph, child) and every decision on a
stored run takes its edge from one Runtime; none of it is part of a run's definition."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, final

from ..core.clock import Clock, IdSource
from ..core.protocols import Cipher, Observer, Store
from ..errors import ConfigError

__all__ = ["RandomIds", "Runtime", "SystemClock", "bind"]


_time_ns = time.time_ns


@final
class SystemClock:
    def now_us(self) -> int:
        return _time_ns() // 1000


@final
class RandomIds:
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{os.urandom(8).hex()}"


@final
class Runtime:
    """store: the log. clock and ids: injected so that tests and replays are deterministic.
    owner: this process's name in leases (drawn from ``ids`` when first needed). lease_ttl_s:
    how long a lease lasts unless renewed; a run's writer renews it with its batches.
    cipher: seals payloads after redaction. observers: see what each batch stored."""

    __slots__ = ("store", "clock", "ids", "lease_ttl_s", "cipher", "observers", "_owner")

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        owner: str | None = None,
        lease_ttl_s: float = 30.0,
        cipher: Cipher | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        if lease_ttl_s <= 0:
            raise ConfigError(f"lease_ttl_s must be positive, not {lease_ttl_s!r}")
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.ids: IdSource = ids or RandomIds()
        self.lease_ttl_s = lease_ttl_s
        self.cipher = cipher
        self.observers = tuple(observers)
        self._owner = owner

    @property
    def owner(self) -> str:
        if self._owner is None:
            self._owner = self.ids.new_id("owner")
        return self._owner

    @classmethod
    def of(cls, store_or_runtime: Store | Runtime) -> Runtime:
        """The runtime itself, or a default one on a store."""
        return store_or_runtime if isinstance(store_or_runtime, Runtime) else cls(store_or_runtime)


class _Bindable(Protocol):
    runtime: Runtime
    _elsewhere: Any

    def _bind(self, runtime: Runtime) -> None: ...


E = TypeVar("E", bound=_Bindable)


def bind(engine: E, runtime: Runtime) -> E:
    """``engine`` (an agent's or a graph's) on ``runtime``: itself if it runs there, else a
    copy bound to it (``_bind``), kept for the next call, since a worker is called from one
    parent's runtime again and again."""
    if runtime is engine.runtime:
        return engine
    cached = engine._elsewhere
    if cached is not None and cached.runtime is runtime:
        return cached  # type: ignore[no-any-return]
    other = copy.copy(engine)
    other._elsewhere = None
    other._bind(runtime)
    engine._elsewhere = other
    return other
