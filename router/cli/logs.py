"""A log as the command line opens it: read-only for the commands that read, for writing
(an existing log only) for the ones that append, the keys from ROUTER_KEYS, and the agent
or graph definition an option names."""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..core.protocols import Cipher, Store
from ..errors import ConfigError
from ..graph.engine import GraphEngine
from ..run.engine import Engine
from ..run.runtime import Runtime
from ..store.open import open_store
from . import demo
from .ops import load_factory

__all__ = ["cipher", "definition", "reading", "runtime", "writing"]


def cipher() -> Cipher | None:
    """The keys in ROUTER_KEYS ("id=hex,id=hex", the first one active), if set."""
    spec = os.environ.get("ROUTER_KEYS", "").strip()
    if not spec:
        return None
    from ..crypto import AesGcmCipher

    keys: dict[str, bytes] = {}
    for item in spec.split(","):
        key_id, _, hex_key = item.strip().partition("=")
        try:
            keys[key_id] = bytes.fromhex(hex_key)
        except ValueError as exc:
            raise ConfigError(f"ROUTER_KEYS: key {key_id!r} is not hex") from exc
    return AesGcmCipher(keys, active=next(iter(keys)))


def runtime(store: Store) -> Runtime:
    return Runtime(store, cipher=cipher())


def reading(db: str) -> AbstractAsyncContextManager[Any]:
    """The log at ``db``, read-only: nothing is created or changed, and a file that is not
    a router log is refused (NotALog)."""
    return open_store(db, read_only=True)


def writing(db: str) -> AbstractAsyncContextManager[Any]:
    """The existing log at ``db``, to append to; refuses anything that is not one."""
    return open_store(db, create=False)


def definition(spec: str, store: Store, db: str) -> Engine | GraphEngine:
    """The engine named by MODULE:FUNCTION, called with the store (or the demo's, for
    "demo"): an Engine for agent runs or a GraphEngine for graph runs."""
    if spec == "demo":
        return demo.demo_engine(runtime(store), demo.crm_path(db))
    engine = load_factory("--agent", spec)(store)
    if not isinstance(engine, Engine | GraphEngine):
        raise ConfigError(
            f"--agent {spec!r} returned {type(engine).__name__}, not an Engine or a GraphEngine"
        )
    return engine
