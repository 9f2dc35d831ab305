"""The hash chain names the first broken link, whatever was changed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.chain import GENESIS, Chain, link, verify
from router.core.events import StoredEvent
from router.errors import ChainBroken
from router.store.testing import sealed_run


def test_an_intact_chain_verifies() -> None:
    events = sealed_run("r", 10)
    assert verify(events) == 10
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))


def test_sealing_is_deterministic() -> None:
    assert sealed_run("r", 5) == sealed_run("r", 5)
    assert sealed_run("r", 1)[0].hash != sealed_run("s", 1)[0].hash  # the run id is hashed


def _edit(event: StoredEvent, **changes: object) -> StoredEvent:
    fields = {f: getattr(event, f) for f in event.__struct_fields__}
    fields.update(changes)
    return StoredEvent(**fields)  # type: ignore[arg-type]


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=2, max_value=12), st.data())
def test_any_tampering_is_caught_at_the_first_broken_link(count: int, data: st.DataObject) -> None:
    events = sealed_run("r", count)
    i = data.draw(st.integers(min_value=0, max_value=count - 1))
    how = data.draw(st.sampled_from(["edit", "delete", "swap", "insert", "rehash"]))
    tampered = list(events)
    if how == "edit":
        tampered[i] = _edit(events[i], payload=events[i].payload.replace(b"event", b"evEnt"))
    elif how == "delete":
        del tampered[i]
    elif how == "swap":
        j = (i + 1) % count
        tampered[i], tampered[j] = tampered[j], tampered[i]
    elif how == "insert":
        tampered.insert(i, events[i])
    else:  # an editor who also recomputes this event's own hash still breaks the next link
        payload = events[i].payload + b" "
        tampered[i] = _edit(
            events[i], payload=payload, hash=link("r", i, payload, events[i].prev_hash)
        )
        if i == count - 1:
            tampered.append(events[-1])
    with pytest.raises(ChainBroken) as info:
        verify(tampered, head=events[-1].hash)
    assert info.value.run_id == "r"
    assert info.value.seq <= max(i + 1, 1)


def test_a_cut_tail_is_caught_only_against_a_known_head() -> None:
    events = sealed_run("r", 4)
    assert verify(events[:3]) == 3
    with pytest.raises(ChainBroken, match="removed"):
        verify(events[:3], head=events[-1].hash)


def test_events_of_another_run_break_the_chain() -> None:
    mixed = sealed_run("a", 2) + sealed_run("b", 1)
    with pytest.raises(ChainBroken, match="another run"):
        verify(mixed)


def test_chain_continues_after_stored_events() -> None:
    first = sealed_run("r", 3)
    chain = Chain.after("r", first)
    assert (chain.next_seq, chain.head) == (3, first[-1].hash)
    assert verify(first + sealed_run("r", 2, start=3, chain=chain)) == 5
