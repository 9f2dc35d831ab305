"""Long-term memory in a run: the ``remember`` and ``recall`` tools, and the recall injected
before each model call under its own token budget.

A run's namespace is derived from its principal (``principal:<id>``, and the ``scope``
after it): neither the model nor a tool's arguments can name another, so one tenant never
reads or writes another's items. Writes are tool calls (their events hold the text and the
id); an automatic recall is a ``memory_recalled`` event (the ids, texts and scores, in rank
order) recorded before the call it serves, so a resume or a replay needs neither the
embedder nor the memory.
"""

from __future__ import annotations

import hashlib
from typing import Any, final

import msgspec

from ..core.clock import Clock
from ..core.events import MemoryRecalled, Message, Principal
from ..core.protocols import Embedder, Memory, MemoryItem, RankWeights, Recalled
from ..core.tokens import Tokenizer, message_tokens
from ..core.tools import Tool, ToolContext, tool
from ..errors import ConfigError
from ..memory.ranking import pack
from .calls import AgentRun

__all__ = ["Recall", "Remembering", "recall_message"]


class Recall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The automatic recall before each model call: at most ``limit`` items, within
    ``budget_tokens``, those scoring at least ``min_score``."""

    limit: int = 5
    budget_tokens: int = 400
    min_score: float = 0.0
    exact: bool = False

    def __post_init__(self) -> None:
        if self.limit < 1 or self.budget_tokens < 1:
            raise ConfigError(f"a recall needs a positive limit and budget: {self!r}")


_RECALL, _WEIGHTS = Recall(), RankWeights()  # frozen: one instance serves every memory


def recall_message(event: MemoryRecalled) -> Message:
    lines = "\n".join(f"- {text}" for text in event.texts)
    return Message(role="user", content=f"[router: from long-term memory]\n{lines}")


@final
class Remembering:
    """A run's long-term memory: where items live, how texts become vectors, how they rank,
    and what is recalled on its own (``recall``; None: only through the tools).

    scope: a part of the namespace after the principal's id (one agent's notes apart from
        another's, for the same principal). ttl_s: items expire unless read within it.
    max_items: a cap on each namespace, enforced on every write (lowest score first).
    """

    def __init__(
        self,
        memory: Memory,
        embedder: Embedder,
        *,
        recall: Recall | None = _RECALL,
        weights: RankWeights = _WEIGHTS,
        scope: str = "",
        ttl_s: float | None = None,
        max_items: int | None = None,
    ) -> None:
        if max_items is not None and max_items < 1:
            raise ConfigError(f"max_items must be positive, not {max_items}")
        self.memory, self.embedder, self.recall = memory, embedder, recall
        self.weights, self.scope, self.max_items = weights, scope, max_items
        self.ttl_us = 0 if ttl_s is None else round(ttl_s * 1e6)

    def namespace(self, principal: Principal) -> str:
        base = f"principal:{principal.id}"
        return f"{base}/{self.scope}" if self.scope else base

    async def vector(self, text: str) -> bytes:
        (values,) = await self.embedder.embed([text])
        if len(values) != self.embedder.dimensions:
            raise ConfigError(
                f"the embedder {self.embedder.name} gave {len(values)} dimensions, "
                f"not {self.embedder.dimensions}"
            )
        return pack(values)

    async def write(
        self, principal: Principal, item_id: str, text: str, importance: float, now_us: int
    ) -> str:
        item = MemoryItem(
            id=item_id,
            namespace=self.namespace(principal),
            text=text,
            vector=await self.vector(text),
            importance=importance,
            created_at=now_us,
            last_used_at=now_us,
            expires_at=now_us + self.ttl_us if self.ttl_us else 0,
            ttl_us=self.ttl_us,
        )
        await self.memory.put([item], max_items=self.max_items)
        return item.id

    def tools(self, clock: Clock) -> list[Tool]:
        """``remember`` and ``recall`` as tools, on the runtime's clock. A note's id comes
        from its run and call, so a remember run again after a crash writes the same item."""
        remembering = self

        @tool(idempotent=True)
        async def remember(text: str, importance: float, context: ToolContext) -> str:
            """Keep a note in long-term memory for later runs. importance: 0 (trivia) to 1
            (must not be forgotten)."""
            if not 0 <= importance <= 1:
                raise ValueError("importance is between 0 and 1")
            seed = f"{context.run_id}\x00{context.call_id}".encode()
            item_id = "mem_" + hashlib.blake2b(seed, digest_size=12).hexdigest()
            now = clock.now_us()
            return await remembering.write(context.principal, item_id, text, importance, now)

        @tool(idempotent=True)
        async def recall(query: str, limit: int, context: ToolContext) -> list[dict[str, Any]]:
            """Search long-term memory; the best notes first (at most limit, up to 20)."""
            found = await remembering.memory.search(
                remembering.namespace(context.principal),
                await remembering.vector(query),
                limit=max(1, min(limit, 20)),
                now_us=clock.now_us(),
                weights=remembering.weights,
            )
            return [{"id": r.id, "text": r.text, "score": r.score} for r in found]

        return [remember, recall]

    async def recall_for(self, run: AgentRun, clock: Clock, tokenizer: Tokenizer) -> MemoryRecalled:
        """What to recall before the run's next model call, within the recall's budget."""
        assert self.recall is not None
        state, messages = run.state, run.transcript.messages
        task = next((m.content for m in reversed(messages[: run.transcript.opening])), "")
        latest = next((m.content for m in reversed(messages) if m.content), "")
        query = task if latest == task else f"{task}\n{latest}"
        namespace = self.namespace(state.principal)
        found = await self.memory.search(
            namespace,
            await self.vector(query),
            limit=self.recall.limit,
            now_us=clock.now_us(),
            weights=self.weights,
            exact=self.recall.exact,
        )
        kept: list[Recalled] = []
        budget = self.recall.budget_tokens
        for r in found:
            if r.score < self.recall.min_score:
                break
            trial = MemoryRecalled(
                at=0, step=0, namespace="", query="", texts=tuple(k.text for k in [*kept, r])
            )
            if message_tokens(tokenizer, recall_message(trial)) > budget:
                break
            kept.append(r)
        return MemoryRecalled(
            at=clock.now_us(),
            step=state.steps + 1,
            namespace=namespace,
            query=query,
            ids=tuple(r.id for r in kept),
            texts=tuple(r.text for r in kept),
            scores=tuple(r.score for r in kept),
        )
