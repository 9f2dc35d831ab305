"""The protocols that adapters implement. The core depends on these, never on adapters."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from .events import Event, Message, RouteAttempt, StoredEvent, Usage

__all__ = [
    "RUN_STATUSES",
    "Cipher",
    "Embedder",
    "Fence",
    "Lease",
    "Memory",
    "MemoryItem",
    "Model",
    "ModelTurn",
    "Observer",
    "ProposedCall",
    "RankWeights",
    "Recalled",
    "RunSummary",
    "Store",
    "StreamDelta",
    "accepts_max_tokens",
    "answering_models",
    "current_run_id",
]

# The run the engine is advancing in this task: a model adapter shared by many runs tags
# each StreamDelta with it, so that a service can route the pieces to the right caller.
current_run_id: ContextVar[str] = ContextVar("router_current_run_id", default="")


class ProposedCall(msgspec.Struct, frozen=True):
    """A tool call as a model adapter hands it over; ``arguments`` is JSON text or bytes."""

    id: str
    name: str
    arguments: str | bytes


class ModelTurn(msgspec.Struct, frozen=True):
    """What a model returns for one step: text, tool calls and token usage."""

    text: str = ""
    tool_calls: tuple[ProposedCall, ...] = ()
    usage: Usage = Usage()
    model: str = ""  # the model asked, as the price table names it ("" for the adapter's name)
    served_model: str = (
        ""  # the exact model the provider says answered (a dated snapshot), if it says
    )
    route: tuple[
        RouteAttempt, ...
    ] = ()  # how a routing policy chose that model, recorded as model_routed


class StreamDelta(msgspec.Struct, frozen=True):
    """A piece of a model's turn as it streams in; the turn itself is still what the model
    adapter returns and what the log records. A retry restarts the stream: pieces from an
    earlier ``attempt`` are void."""

    model: str
    text: str = ""  # a piece of the answer
    call_index: int = -1  # for a piece of a tool call: its index in the turn
    call_id: str = ""
    call_name: str = ""
    arguments: str = ""  # a piece of the call's JSON arguments
    attempt: int = 1
    run_id: str = ""  # the run whose model call this is (``current_run_id``), "" outside a run


@runtime_checkable
class Model(Protocol):
    """A model router can call. Under a token or cost ceiling (or an output reserve in the
    price table) ``respond`` must also take a keyword ``max_tokens: int | None = None``, the
    most output tokens the turn may take, and hold to it (providers stop generating there).
    A model that delegates to others (``ModelRouter``) lists the names that may answer in
    ``models``, so that every one of them is priced and the dearest bounds a call's cost.
    """

    name: str

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        """One model turn. ``tools`` are JSON Schemas in the OpenAI function format."""
        ...


def answering_models(model: Model) -> tuple[str, ...]:
    """The names of the models that may answer a call to ``model``."""
    names = getattr(model, "models", None)
    return tuple(names) if names else (model.name,)


def accepts_max_tokens(model: Model) -> bool:
    """Whether ``model.respond`` takes a keyword ``max_tokens``."""
    try:
        parameters = inspect.signature(model.respond).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "max_tokens" or p.kind is p.VAR_KEYWORD for p in parameters)


# A run's status for workers, kept beside its lease: "active" runs need a driver (a worker
# claims one whose lease has lapsed), "waiting" runs wait for a person's decision, "ended"
# runs are over, "parked" runs failed to resume again and again and wait for an operator,
# "child" runs are advanced by their parent's driver (a resumed parent resumes them).
RUN_STATUSES = ("active", "waiting", "ended", "parked", "child")


class RunSummary(msgspec.Struct, frozen=True):
    run_id: str
    events: int
    last_kind: str
    status: str = "active"


class Lease(msgspec.Struct, frozen=True):
    """A run's lease as its holder knows it. ``token`` is the run's fencing token: every
    take bumps it, it only grows, and a writer whose token is no longer the run's is
    refused whatever its own clock says."""

    run_id: str
    owner: str
    expires_at: float  # seconds since the Unix epoch, on the store's clock
    token: int = 0


class Fence(msgspec.Struct, frozen=True):
    """What an append claims of its run's lease, checked in the batch's own transaction.

    token 0: the writer holds no lease and takes it with the batch for ``ttl_s`` seconds
    (LeaseHeld if another owner holds it). Otherwise the token the writer holds: the batch
    is refused (LeaseLost) unless it is still the run's. release: give the lease back once
    the batch is stored, leaving the run in ``status`` (one of RUN_STATUSES)."""

    owner: str
    token: int = 0
    ttl_s: float = 30.0
    release: bool = False
    status: str = "active"


class Store(Protocol):
    """An append-only log of runs. See router.store.testing for the contract every store passes."""

    async def append(self, events: Sequence[StoredEvent], *, fence: Fence | None = None) -> int:
        """Append one run's events atomically: all or none. Returns the fencing token the
        writer holds afterwards (0 if none).

        Raises SeqConflict unless the first event continues the run's chain (its seq is
        one past the last stored seq, its prev_hash the last stored hash) and the rest
        follow on without gaps.

        fence: the writer's claim on the run's lease (see Fence), checked and applied in
        the same transaction, so that a run's first batch takes its lease and its last
        releases it with no round trip of their own. Raises LeaseHeld (taking) or LeaseLost
        (holding a stale token), appending nothing. Without a fence the batch is refused
        (LeaseHeld) while anyone holds the run's lease.
        """
        ...

    async def read(self, run_id: str, after: int = -1) -> list[StoredEvent]:
        """The run's events with seq > after, in seq order."""
        ...

    async def runs(self) -> list[RunSummary]: ...

    async def scan(self, after: int = 0, limit: int = 10_000) -> list[tuple[int, StoredEvent]]:
        """Events of every run in the order they were appended, as (id, event) with
        id > after, at most ``limit``. Ids only grow: the last one is a watermark."""
        ...

    async def acquire_lease(self, run_id: str, owner: str, ttl_s: float) -> Lease:
        """Take the run's lease, bumping its fencing token (a holder taking it again fences
        its own earlier writers). Raises LeaseHeld if another owner holds it."""
        ...

    async def renew_leases(self, leases: Sequence[Lease], ttl_s: float) -> list[Lease]:
        """Extend each lease that is still its run's (same owner and token) by ``ttl_s``
        seconds from now, in one transaction. Returns those that are lost."""
        ...

    async def release_lease(
        self, run_id: str, owner: str, token: int = 0, status: str = ""
    ) -> None:
        """Give the run's lease back if ``owner`` holds it (with ``token``, unless 0),
        leaving the run in ``status`` ("" leaves it as it is)."""
        ...

    async def break_lease(self, run_id: str) -> None:
        """Free the run's lease whoever holds it and bump its token, so that the old holder
        is fenced: an operator's act, for an owner known to be dead (``router unlease``)."""
        ...

    async def claim(self, owner: str, ttl_s: float, limit: int) -> list[Lease]:
        """Take the leases of at most ``limit`` active runs whose lease has lapsed or was
        given back (each take bumps the run's token), for a worker to resume them. Runs
        that another claimant is taking at the same moment are skipped, not waited for."""
        ...

    async def aclose(self) -> None: ...


class MemoryItem(msgspec.Struct, frozen=True):
    """One thing a long-term memory holds, in one namespace (a tenant's, derived from a
    run's principal). ``vector``: the text's embedding, float32, unit length, computed
    once when the item is written. Times are microseconds since the Unix epoch;
    ``expires_at`` 0 never expires, and a read of the item pushes it ``ttl_us`` later."""

    id: str
    namespace: str
    text: str
    vector: bytes
    importance: float = 0.5  # 0 to 1
    created_at: int = 0
    last_used_at: int = 0
    expires_at: int = 0
    ttl_us: int = 0


class Recalled(msgspec.Struct, frozen=True):
    """An item a search returned, with its score and what the score is made of."""

    id: str
    text: str
    score: float
    similarity: float
    importance: float
    last_used_at: int


class Embedder(Protocol):
    """Turns texts into vectors of ``dimensions`` floats (router normalises them)."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class Memory(Protocol):
    """A long-term memory: items in namespaces, searched by a query's vector and ranked by
    similarity, recency and importance (router.memory.ranking). Every method takes the
    namespace: a caller can only ever touch one namespace at a time, and the engine derives
    it from the run's principal, never from what a model or a tool says."""

    async def put(
        self,
        items: Sequence[MemoryItem],
        *,
        max_items: int | None = None,
        evict_by: Literal["score", "lru"] = "score",
        weights: RankWeights | None = None,
    ) -> int:
        """Write (or replace, by id) items of one namespace; then, with ``max_items``, evict
        the items over that count: the lowest score without a query (recency and
        importance, by ``weights``), or the least recently used. Returns how many went."""
        ...

    async def search(
        self,
        namespace: str,
        vector: bytes,
        *,
        limit: int,
        now_us: int,
        weights: RankWeights,
        exact: bool = False,
    ) -> list[Recalled]:
        """The ``limit`` best items by score, ties broken by id; expired items never.
        ``exact`` scores every item (the reference); otherwise a quantised first pass
        picks the candidates that are scored exactly. Found items are marked used now."""
        ...

    async def forget(self, namespace: str, ids: Sequence[str]) -> int:
        """Delete these items; returns how many there were."""
        ...

    async def evict(self, namespace: str, *, now_us: int) -> int:
        """Delete the namespace's expired items; returns how many."""
        ...

    async def count(self, namespace: str) -> int: ...

    async def aclose(self) -> None: ...


class RankWeights(msgspec.Struct, frozen=True):
    """How a memory search ranks: ``similarity`` times the cosine of the query and the item,
    plus ``recency`` times 0.5 ** (days since last used / ``half_life_days``), plus
    ``importance`` times the item's importance (CrewAI's weights by default)."""

    similarity: float = 0.5
    recency: float = 0.3
    importance: float = 0.2
    half_life_days: float = 30.0


class Observer(Protocol):
    """Sees each batch of a run's events once the store has committed it (traces, metrics).
    It must not raise: an exception stops the run's driver."""

    def committed(self, run_id: str, events: Sequence[Event]) -> None: ...


class Cipher(Protocol):
    """Seals payloads before they are hashed and stored; opens them when read."""

    def seal(self, plaintext: bytes) -> bytes: ...

    def open(self, stored: bytes) -> bytes:
        """The plaintext of a sealed payload; a plaintext payload comes back as it is.
        Raises KeyMissing if the key it was sealed with is not known."""
        ...
