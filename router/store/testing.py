"""The store conformance suite: the contract every Store must keep.

Use it from a test module with a fixture named ``store`` that yields a fresh, open store::

    from router.store.testing import *  # noqa: F403  (collects the test_store_* functions)

Each test is async and runs under pytest's anyio plugin.
"""

from __future__ import annotations

import pytest

from ..core.chain import Chain, verify
from ..core.events import RunFailed, StoredEvent
from ..core.protocols import Fence, Store
from ..errors import LeaseHeld, LeaseLost, SeqConflict, StoreError

__all__ = [
    "sealed_run",
    "test_store_append_and_read_back",
    "test_store_append_is_all_or_nothing",
    "test_store_append_takes_and_releases_the_lease_in_one_step",
    "test_store_append_with_a_lease_is_all_or_nothing",
    "test_store_claim_takes_the_lapsed_active_runs",
    "test_store_fencing_holds_after_a_refused_batch",
    "test_store_fencing_refuses_a_stale_token",
    "test_store_lease_excludes_other_owners",
    "test_store_lease_expires_and_is_released",
    "test_store_lease_names_its_owner_and_breaks",
    "test_store_many_runs_share_one_store",
    "test_store_read_after_seq",
    "test_store_refuses_a_batch_mixing_runs",
    "test_store_refuses_a_broken_prev_hash",
    "test_store_refuses_a_gap_or_a_repeat",
    "test_store_renews_the_leases_still_held",
    "test_store_runs_lists_each_run_once",
    "test_store_scan_pages_through_every_run_in_append_order",
]


def sealed_run(
    run_id: str, count: int, start: int = 0, chain: Chain | None = None
) -> list[StoredEvent]:
    """``count`` linked events for ``run_id`` (seq start .. start+count-1)."""
    chain = chain or Chain(run_id)
    events = chain.seal(
        RunFailed(at=start + i, code="test", reason=f"event {start + i}") for i in range(count)
    )
    chain.advance(events)
    return events


pytestmark = pytest.mark.anyio


async def test_store_append_and_read_back(store: Store) -> None:
    events = sealed_run("r1", 5)
    await store.append(events[:2])
    await store.append(events[2:])
    assert await store.read("r1") == events
    assert verify(await store.read("r1")) == 5


async def test_store_read_after_seq(store: Store) -> None:
    events = sealed_run("r1", 6)
    await store.append(events)
    assert await store.read("r1", after=3) == events[4:]
    assert await store.read("r1", after=5) == []
    assert await store.read("missing") == []


async def test_store_refuses_a_gap_or_a_repeat(store: Store) -> None:
    chain = Chain("r1")
    first = sealed_run("r1", 3, chain=chain)
    await store.append(first)
    with pytest.raises(SeqConflict):
        await store.append(first[2:])  # seq 2 again
    skipped = Chain("r1", 4, first[-1].hash).seal([RunFailed(at=9, code="test", reason="gap")])
    with pytest.raises(SeqConflict):
        await store.append(skipped)  # seq 4 with no seq 3
    assert await store.read("r1") == first


async def test_store_refuses_a_broken_prev_hash(store: Store) -> None:
    await store.append(sealed_run("r1", 2))
    forged = Chain("r1", 2, bytes(32)).seal([RunFailed(at=2, code="test", reason="forged")])
    with pytest.raises(SeqConflict):
        await store.append(forged)
    assert len(await store.read("r1")) == 2


async def test_store_append_is_all_or_nothing(store: Store) -> None:
    events = sealed_run("r1", 4)
    await store.append(events[:1])
    broken = [events[1], events[2], events[2]]  # the third repeats seq 2
    with pytest.raises(SeqConflict):
        await store.append(broken)
    assert await store.read("r1") == events[:1]
    await store.append(events[1:])
    assert await store.read("r1") == events


async def test_store_refuses_a_batch_mixing_runs(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.append([sealed_run("a", 1)[0], sealed_run("b", 1)[0]])
    assert await store.read("a") == []


async def test_store_many_runs_share_one_store(store: Store) -> None:
    runs = {f"run{i}": sealed_run(f"run{i}", 3 + i) for i in range(5)}
    for i in range(7):  # interleave the runs' appends
        for events in runs.values():
            if i < len(events):
                await store.append(events[i : i + 1])
    for run_id, events in runs.items():
        assert await store.read(run_id) == events


async def test_store_runs_lists_each_run_once(store: Store) -> None:
    await store.append(sealed_run("b", 2))
    await store.append(sealed_run("a", 3))
    summaries = {s.run_id: s for s in await store.runs()}
    assert set(summaries) == {"a", "b"}
    assert (summaries["a"].events, summaries["a"].last_kind) == (3, "run_failed")
    assert summaries["b"].events == 2


async def test_store_lease_excludes_other_owners(store: Store) -> None:
    lease = await store.acquire_lease("r1", "p1", 60)
    assert (lease.run_id, lease.owner) == ("r1", "p1") and lease.token > 0
    again = await store.acquire_lease("r1", "p1", 60)  # the holder takes it again: a new token
    assert again.token > lease.token
    with pytest.raises(LeaseHeld) as info:
        await store.acquire_lease("r1", "p2", 60)
    assert info.value.owner == "p1"
    await store.acquire_lease("r2", "p2", 60)  # leases are per run


async def test_store_lease_expires_and_is_released(store: Store) -> None:
    first = await store.acquire_lease("r1", "p1", 0)  # expires at once
    second = await store.acquire_lease("r1", "p2", 60)  # so another owner may take it
    assert second.token > first.token
    await store.release_lease("r1", "p1")  # not the holder: no effect
    with pytest.raises(LeaseHeld):
        await store.acquire_lease("r1", "p1", 60)
    await store.release_lease("r1", "p2", first.token)  # the holder, with a stale token
    with pytest.raises(LeaseHeld):
        await store.acquire_lease("r1", "p1", 60)
    await store.release_lease("r1", "p2", second.token)
    assert (await store.acquire_lease("r1", "p1", 60)).token > second.token


async def test_store_append_takes_and_releases_the_lease_in_one_step(store: Store) -> None:
    events = sealed_run("r1", 4)
    token = await store.append(events[:2], fence=Fence("p1", 0, 60))
    assert token > 0
    with pytest.raises(LeaseHeld):  # the first batch took the lease
        await store.acquire_lease("r1", "p2", 60)
    assert await store.append(events[2:3], fence=Fence("p1", token)) == token
    done = Fence("p1", token, release=True, status="ended")
    assert await store.append(events[3:], fence=done) == 0  # the last batch releases it
    assert [s.status for s in await store.runs()] == ["ended"]
    await store.acquire_lease("r1", "p2", 60)
    assert await store.read("r1") == events


async def test_store_append_with_a_lease_is_all_or_nothing(store: Store) -> None:
    events = sealed_run("r1", 3)
    held = await store.acquire_lease("r1", "p2", 60)
    with pytest.raises(LeaseHeld):  # another owner holds it: the events are not appended
        await store.append(events[:1], fence=Fence("p1", 0, 60))
    with pytest.raises(LeaseHeld):  # nor may a writer with no fence append
        await store.append(events[:1])
    assert await store.read("r1") == []
    await store.release_lease("r1", "p2", held.token)
    await store.append(events[:1])
    with pytest.raises(SeqConflict):  # a batch that does not continue the chain takes no lease
        await store.append(events[2:], fence=Fence("p1", 0, 60))
    await store.acquire_lease("r1", "p2", 60)
    with pytest.raises(StoreError):  # a fence goes with events
        await store.append([], fence=Fence("p2", 0, 60))


async def test_store_fencing_refuses_a_stale_token(store: Store) -> None:
    events = sealed_run("r1", 4)
    old = await store.append(events[:1], fence=Fence("p1", 0, 0))  # its lease lapses at once
    new = await store.acquire_lease("r1", "p2", 60)  # another owner takes the run over
    assert new.token > old
    with pytest.raises(LeaseLost):  # the old writer wakes: refused, whatever its clock says
        await store.append(events[1:2], fence=Fence("p1", old))
    assert await store.read("r1") == events[:1]
    assert await store.append(events[1:2], fence=Fence("p2", new.token)) == new.token
    await store.break_lease("r1")  # an operator breaks the new owner's lease: fenced too
    with pytest.raises(LeaseLost):
        await store.append(events[2:3], fence=Fence("p2", new.token))
    latest = await store.acquire_lease("r1", "p3", 60)
    assert latest.token > new.token
    assert await store.append(events[2:], fence=Fence("p3", latest.token)) == latest.token
    assert await store.read("r1") == events


async def test_store_renews_the_leases_still_held(store: Store) -> None:
    a = await store.acquire_lease("a", "p1", 60)
    b = await store.acquire_lease("b", "p1", 0)
    assert await store.renew_leases([a, b], 60) == []  # b had lapsed, but nobody took it
    b = await store.acquire_lease("b", "p1", 0)
    await store.acquire_lease("b", "p2", 60)  # now somebody did
    assert await store.renew_leases([a, b], 60) == [b]
    with pytest.raises(LeaseHeld):  # a was renewed
        await store.acquire_lease("a", "p2", 60)
    assert await store.renew_leases([], 60) == []


async def test_store_claim_takes_the_lapsed_active_runs(store: Store) -> None:
    async def run(run_id: str, owner: str, ttl_s: float, release: str = "") -> None:
        fence = Fence(owner, 0, ttl_s, bool(release), release or "active")
        await store.append(sealed_run(run_id, 1), fence=fence)

    await run("released", "p1", 60, release="active")  # its driver gave it back unfinished
    await run("waiting", "p1", 60, release="waiting")  # waits for a person
    await run("ended", "p1", 60, release="ended")
    await run("parked", "p1", 60, release="parked")
    await run("held", "p1", 60)  # its driver is alive
    await run("lapsed", "p1", 0)  # its driver died
    claimed = await store.claim("w1", 60, 10)
    assert {c.run_id for c in claimed} == {"released", "lapsed"}
    assert all(c.owner == "w1" and c.token > 0 for c in claimed)
    assert await store.claim("w2", 60, 10) == []  # w1 holds them now
    with pytest.raises(LeaseHeld):
        await store.acquire_lease("lapsed", "p1", 60)
    statuses = {s.run_id: s.status for s in await store.runs()}
    assert statuses["waiting"] == "waiting" and statuses["lapsed"] == "active"
    lapsed = next(c for c in claimed if c.run_id == "lapsed")
    await store.release_lease("lapsed", "w1", lapsed.token, "waiting")
    await store.release_lease("released", "w1", 0, "")  # status left as it was
    assert [c.run_id for c in await store.claim("w2", 60, 10)] == ["released"]
    assert await store.claim("w3", 0, 0) == []  # a limit of none


async def test_store_scan_pages_through_every_run_in_append_order(store: Store) -> None:
    a, b = sealed_run("a", 3), sealed_run("b", 2)
    for batch in (a[:2], b[:1], a[2:], b[1:]):
        await store.append(batch)
    scanned = await store.scan()
    assert [e for _, e in scanned] == [a[0], a[1], b[0], a[2], b[1]]
    ids = [i for i, _ in scanned]
    assert ids == sorted(ids) and len(set(ids)) == 5
    first, rest = await store.scan(limit=2), await store.scan(after=ids[1])
    assert [e for _, e in first + rest] == [e for _, e in scanned]
    assert await store.scan(after=ids[-1]) == []


async def test_store_lease_names_its_owner_and_breaks(store: Store) -> None:
    await store.acquire_lease("r1", "dead", 60)
    with pytest.raises(LeaseHeld) as info:
        await store.acquire_lease("r1", "alive", 60)
    assert info.value.owner == "dead" and info.value.until > 0  # who, and until when
    assert "router unlease r1" in str(info.value)
    await store.break_lease("r1")  # an operator breaks a dead owner's lease
    await store.acquire_lease("r1", "alive", 60)
    await store.break_lease("missing")  # no lease: nothing to break


async def test_store_fencing_holds_after_a_refused_batch(store: Store) -> None:
    events = sealed_run("r1", 3)
    token = await store.append(events[:1], fence=Fence("p1", 0, 0))  # lapses at once
    with pytest.raises(SeqConflict):  # refused: it does not continue the chain
        await store.append(events[2:], fence=Fence("p1", token))
    taken = await store.acquire_lease("r1", "p2", 60)
    with pytest.raises(LeaseLost):  # the stale holder is still fenced
        await store.append(events[1:2], fence=Fence("p1", token))
    assert await store.append(events[1:2], fence=Fence("p2", taken.token)) == taken.token
    with pytest.raises(LeaseLost):
        await store.append(events[2:], fence=Fence("p1", token))
    assert await store.read("r1") == events[:2]
