"""Long-term memory: ranking (similarity, recency, importance; ties by id), the hashed
embedder, the SQLite memory (TTL, caps, forgetting, the quantised first pass against exact
search), memory in runs (tools, recall recorded as events, replay without the embedder or
the memory), and tenants that never see each other's items."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import (
    Engine,
    Message,
    ModelTurn,
    Phase,
    Principal,
    ProposedCall,
    SqliteStore,
    Tools,
)
from router.core.events import MemoryRecalled, ToolCallRejected
from router.core.protocols import Memory, MemoryItem, RankWeights
from router.core.stored import decode_run
from router.memory.embedding import HashedEmbedder
from router.memory.ranking import cosine, pack, rank, unpack
from router.run.memories import Recall, Remembering
from router.store.sqlite_memory import SqliteMemory

pytestmark = pytest.mark.anyio
DAY = 86_400 * 1_000_000
NOW = 1_000 * DAY
EMBED = HashedEmbedder()
WEIGHTS = RankWeights()


def item(i: int, text: str, *, ns: str = "principal:a", **fields: Any) -> MemoryItem:
    fields.setdefault("created_at", NOW)
    return MemoryItem(
        id=f"m{i:05d}", namespace=ns, text=text, vector=pack(EMBED.vector(text)), **fields
    )


# --- ranking and the embedder ----------------------------------------------------------------


def test_similar_texts_are_nearer_than_unrelated_ones_on_every_machine() -> None:
    a, b, c = (
        unpack(pack(EMBED.vector(t)))
        for t in ("refund the double charge", "refund of a charge made twice", "weather in Oslo")
    )
    assert cosine(a, b) > cosine(a, c) + 0.2
    assert EMBED.vector("Refund!") == EMBED.vector("refund")  # case and punctuation aside
    assert HashedEmbedder(64).vector("x") != EMBED.vector("x")[:64]


def test_ranking_weighs_similarity_recency_and_importance_and_breaks_ties_by_id() -> None:
    query = pack(EMBED.vector("refund policy"))
    same = pack(EMBED.vector("refund policy"))
    items = [
        ("b", "old", same, 0.5, NOW - 300 * DAY),  # as similar, long unused
        ("a", "new", same, 0.5, NOW),
        ("c", "twin", same, 0.5, NOW),  # the same as "a": id decides
        ("d", "vital", pack(EMBED.vector("unrelated")), 1.0, NOW),
    ]
    ranked = rank(items, query, now_us=NOW, weights=WEIGHTS, limit=4)
    assert [r.id for r in ranked] == ["a", "c", "b", "d"]
    assert ranked[0].score == pytest.approx(0.5 + 0.3 + 0.1)
    assert rank(reversed(items), query, now_us=NOW, weights=WEIGHTS, limit=4) == ranked


# --- the memories: SQLite and PostgreSQL ----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def memory(request: Any, tmp_path: Path) -> AsyncIterator[Memory]:
    if request.param == "sqlite":
        async with SqliteMemory.open(tmp_path / "m.db") as opened:
            yield opened
    else:
        from router.store.postgres_memory import PostgresMemory

        async with PostgresMemory.open(request.getfixturevalue("postgres")) as on_server:
            yield on_server


async def test_items_expire_unless_read_and_a_read_pushes_their_expiry(memory: Memory) -> None:
    ttl = 10 * DAY
    await memory.put(
        [
            item(1, "keep the invoice", expires_at=NOW + ttl, ttl_us=ttl),
            item(2, "keep the receipt", expires_at=NOW + ttl, ttl_us=ttl),
        ]
    )
    q = pack(EMBED.vector("invoice"))
    found = await memory.search("principal:a", q, limit=1, now_us=NOW + 9 * DAY, weights=WEIGHTS)
    assert [r.id for r in found] == ["m00001"]  # read on day 9: now lives to day 19
    assert await memory.evict("principal:a", now_us=NOW + 15 * DAY) == 1
    later = await memory.search(
        "principal:a", q, limit=5, now_us=NOW + 15 * DAY, weights=WEIGHTS, exact=True
    )
    assert [r.id for r in later] == ["m00001"]
    assert await memory.forget("principal:a", ["m00001", "nope"]) == 1
    assert await memory.count("principal:a") == 0


async def test_a_namespace_is_capped_on_every_write(memory: Memory) -> None:
    notes = [item(i, f"note {i}", importance=i / 10) for i in range(10)]
    assert await memory.put(notes, max_items=4) == 6
    assert await memory.count("principal:a") == 4
    q = pack(EMBED.vector("note"))
    kept = await memory.search("principal:a", q, limit=10, now_us=NOW, weights=WEIGHTS)
    assert sorted(r.id for r in kept) == ["m00006", "m00007", "m00008", "m00009"]
    lru = [item(20 + i, f"memo {i}", last_used_at=NOW + i) for i in range(3)]
    await memory.put(lru, max_items=2, evict_by="lru")
    assert await memory.count("principal:a") == 2


async def test_a_write_names_one_namespace(memory: Memory) -> None:
    from router import ConfigError

    with pytest.raises(ConfigError, match="exactly one namespace"):
        await memory.put([item(1, "x"), item(2, "y", ns="principal:b")])
    with pytest.raises(ConfigError, match="exactly one namespace"):
        await memory.put([item(1, "x", ns="")])


WORDS = (
    "invoice refund charge customer order shipping delay warehouse parcel address payment "
    "card bank transfer discount coupon loyalty account password login email phone support "
    "ticket priority escalation manager contract renewal subscription plan upgrade downgrade"
).split()


async def test_the_quantised_first_pass_finds_what_exact_search_finds(memory: Memory) -> None:
    rng = random.Random(11)
    notes = [
        item(
            i,
            " ".join(rng.choices(WORDS, k=8)),
            importance=rng.random(),
            last_used_at=NOW - rng.randrange(60 * DAY),
        )
        for i in range(2_000)
    ]
    await memory.put(notes)
    hits = total = 0
    weights = RankWeights(recency=0.0)  # a search marks what it found as used
    for _ in range(30):
        q = pack(EMBED.vector(" ".join(rng.choices(WORDS, k=3))))
        exact = await memory.search(
            "principal:a", q, limit=10, now_us=NOW, weights=weights, exact=True
        )
        fast = await memory.search("principal:a", q, limit=10, now_us=NOW, weights=weights)
        hits += len({r.id for r in exact} & {r.id for r in fast})
        total += len(exact)
    assert hits / total >= 0.9


# --- memory in runs ---------------------------------------------------------------------------


class Notes:
    """Remembers a fact on its first turn of the first run; in a later run, answers with
    what it was given from memory."""

    name = "notes"

    def __init__(self, remember: str | None) -> None:
        self.remember = remember
        self.seen: list[list[Message]] = []

    async def respond(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> ModelTurn:
        self.seen.append(list(messages))
        if self.remember is not None and not any(m.role == "tool" for m in messages):
            args = f'{{"text": "{self.remember}", "importance": 0.9}}'
            return ModelTurn(tool_calls=(ProposedCall("c1", "remember", args),))
        recalled = [m.content for m in messages if m.content.startswith("[router: from")]
        return ModelTurn(text=recalled[0] if recalled else "nothing recalled")


async def test_a_note_remembered_in_one_run_is_recalled_in_the_next_and_replays_alone(
    tmp_path: Path,
) -> None:
    async with (
        SqliteStore.open(tmp_path / "log.db") as store,
        SqliteMemory.open(tmp_path / "log.db") as memory,
    ):
        remembering = Remembering(memory, EMBED, recall=Recall(limit=3, budget_tokens=200))
        tools = Tools(remembering.tools(store_clock(store)))
        alice = Principal(id="alice")
        first = Engine(store, Notes("Alice prefers refunds to her card"), tools, memory=remembering)
        assert (await first.start("Note my preference.", principal=alice)).phase is Phase.DONE
        second = Engine(store, Notes(None), tools, memory=remembering)
        result = await second.start("How should I refund Alice?", principal=alice)
        assert "refunds to her card" in result.output
        events = decode_run(await store.read(result.run_id))
        recalled = [e for e in events if isinstance(e, MemoryRecalled)]
        assert recalled and recalled[0].namespace == "principal:alice"
        assert recalled[0].texts == ("Alice prefers refunds to her card",)
        # replay needs neither the embedder nor the memory
        await memory.forget("principal:alice", list(recalled[0].ids))
        report = await Engine(store, Notes(None), tools, memory=remembering).replay(result.run_id)
        assert report.identical, report.divergence


def store_clock(store: Any) -> Any:
    from router import Runtime

    return Runtime.of(store).clock


async def test_a_model_cannot_name_another_namespace(tmp_path: Path) -> None:
    class Snoop:
        name = "snoop"

        async def respond(self, messages: Any, tools: Any) -> ModelTurn:
            if any(m.role == "tool" for m in messages):
                return ModelTurn(text="done")
            args = '{"query": "secret", "limit": 5, "namespace": "principal:bob"}'
            return ModelTurn(tool_calls=(ProposedCall("c1", "recall", args),))

    async with (
        SqliteStore.open(tmp_path / "log.db") as store,
        SqliteMemory.open(tmp_path / "m.db") as memory,
    ):
        remembering = Remembering(memory, EMBED, recall=None)
        engine = Engine(store, Snoop(), Tools(remembering.tools(store_clock(store))))
        result = await engine.start("look", principal=Principal(id="alice"))
        events = decode_run(await store.read(result.run_id))
        assert any(isinstance(e, ToolCallRejected) and "namespace" in e.reason for e in events)


async def test_two_tenants_writing_and_recalling_at_once_never_see_each_other(
    memory: Memory,
) -> None:
    remembering = Remembering(memory, EMBED, recall=None)
    tenants = [Principal(id="alice"), Principal(id="bob")]
    leaks: list[str] = []  # what a tenant found of another's

    async def work(who: Principal, n: int) -> None:
        for i in range(n):
            await remembering.write(who, f"{who.id}-{i}", f"order {i} of {who.id}", 0.5, NOW)
            found = await memory.search(
                remembering.namespace(who),
                await remembering.vector(f"order {i}"),
                limit=20,
                now_us=NOW,
                weights=WEIGHTS,
            )
            leaks.extend(r.text for r in found if not r.text.endswith(who.id))

    async with anyio.create_task_group() as tg:
        for who in tenants:
            tg.start_soon(work, who, 60)
    assert leaks == []
    assert await memory.count("principal:alice") == await memory.count("principal:bob") == 60


async def test_sqlite_and_postgresql_rank_alike(tmp_path: Path, postgres: str) -> None:
    from router.store.postgres_memory import PostgresMemory

    rng = random.Random(5)
    notes = [
        item(
            i,
            " ".join(rng.choices(WORDS, k=6)),
            importance=round(rng.random(), 3),
            last_used_at=NOW - rng.randrange(60 * DAY),
        )
        for i in range(500)
    ]
    queries = [pack(EMBED.vector(" ".join(rng.choices(WORDS, k=3)))) for _ in range(20)]
    results = []
    async with SqliteMemory.open(tmp_path / "m.db") as lite, PostgresMemory.open(postgres) as pg:
        for memory in (lite, pg):
            await memory.put(notes)
            results.append(
                [
                    await memory.search(
                        "principal:a", q, limit=10, now_us=NOW + i, weights=WEIGHTS, exact=exact
                    )
                    for i, q in enumerate(queries)
                    for exact in (False, True)
                ]
            )
    assert results[0] == results[1]
    assert sum(len(r) for r in results[0]) == 400
