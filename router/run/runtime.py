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
from .leases import LeaseKeeper
from .watch import CallWatch

__all__ = ["LEASE_TTL_S", "RandomIds", "Runtime", "SystemClock", "bind"]

# How long a lease lasts unless renewed (renewed every third of it): with a worker polling
# every second, a dead process's runs continue elsewhere within about seven seconds.
LEASE_TTL_S = 6.0


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
    how long a lease lasts unless renewed; the runtime's lease keeper renews the leases of
    the runs it advances every third of that, on the event loop's clock, so that another
    process takes a run over within about that long after this one dies.
    cipher: seals payloads after redaction. observers: see what each batch stored.
    Its watch bounds every model call of the runs it advances (``Limits.model_timeout_s``)."""

    __slots__ = (
        "store",
        "clock",
        "ids",
        "lease_ttl_s",
        "cipher",
        "observers",
        "keeper",
        "watch",
        "_owner",
    )

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        owner: str | None = None,
        lease_ttl_s: float = LEASE_TTL_S,
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
        self.keeper = LeaseKeeper(store, lease_ttl_s)
        self.watch = CallWatch()  # bounds the model calls of the runs advanced here
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
