"""Auditing a whole log, event by event in the order of appends: every run's chain, every
stored column, and the heads an auditor kept elsewhere (anchors). Pure.

A chain proves that what is there was not changed; it cannot prove that nothing is missing
at the end, or that a whole run was not removed, or that a run was not rewritten and
re-hashed from some seq on. Anchors can: the last (seq, hash) of each run, taken earlier
(``router heads``) and kept outside the log. An audit with anchors reports every run they
name that is missing, shorter than its anchor, or holds another hash at the anchor's seq.

The audit reports every problem it finds rather than stopping at the first: one per run
(after its first broken link the rest of that run is unverifiable), and one per anchor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..errors import ConfigError, RouterError
from .chain import GENESIS, link
from .events import StoredEvent, kind_of
from .protocols import Cipher
from .stored import decode_stored, is_sealed

__all__ = ["Anchor", "LogAudit", "Problem", "anchors_from_json", "anchors_to_json"]


class Anchor(msgspec.Struct, frozen=True):
    """A run's head as an auditor kept it: its last seq and that event's hash."""

    seq: int
    hash: str  # hex


class Problem(msgspec.Struct, frozen=True):
    """One thing the audit found wrong: in a run (at a seq when it has one), or in the log."""

    run_id: str
    seq: int  # -1: the whole run
    what: str
    lost: int = 0  # anchored events the log no longer holds (or no longer proves)

    def __str__(self) -> str:
        at = f" at seq {self.seq}" if self.seq >= 0 else ""
        return f"run {self.run_id!r}{at}: {self.what}"


class _Head:
    __slots__ = ("seq", "hash", "broken")

    def __init__(self) -> None:
        self.seq, self.hash, self.broken = -1, GENESIS, False


class LogAudit:
    """Feed it ``(id, stored event)`` pairs in id order (a store's ``scan``), then call
    ``finish`` with the run list; read ``problems`` and ``heads``. ``anchors``: the heads
    an auditor kept, each checked at ``finish``."""

    def __init__(
        self, cipher: Cipher | None = None, anchors: Mapping[str, Anchor] | None = None
    ) -> None:
        self.cipher = cipher
        self.runs: dict[str, _Head] = {}
        self.problems: list[Problem] = []
        self.events = 0
        self.sealed = 0  # sealed events whose kind could not be checked (no key)
        self._anchored = dict(anchors or {})  # the heads an auditor kept, to check
        self._anchor_hashes: dict[str, bytes] = {}  # the hash found at each anchor's seq

    def add(self, pairs: Iterable[tuple[int, StoredEvent]]) -> None:
        """Audit the next events of the log, in the order they were appended (id order: a
        run whose id column was reordered shows as a seq out of place)."""
        for _, stored in pairs:
            self.events += 1
            head = self.runs.get(stored.run_id)
            if head is None:
                head = self.runs[stored.run_id] = _Head()
            if not head.broken:
                self._check(stored, head)

    def _check(self, stored: StoredEvent, head: _Head) -> None:
        what = self._fault(stored, head)
        if what:
            head.broken = True
            self.problems.append(Problem(stored.run_id, head.seq + 1, what))
            return
        head.seq, head.hash = stored.seq, stored.hash
        anchor = self._anchored.get(stored.run_id)
        if anchor is not None and anchor.seq == stored.seq:
            self._anchor_hashes[stored.run_id] = stored.hash

    def _fault(self, stored: StoredEvent, head: _Head) -> str:
        """What is wrong with the next stored event of a run ("" if nothing)."""
        if stored.seq != head.seq + 1:
            return (
                f"expected seq {head.seq + 1}, found {stored.seq} (a missing event, or the id "
                "column out of the order of appends)"
            )
        if stored.prev_hash != head.hash:
            return "prev_hash does not match the previous event's hash"
        if link(stored.run_id, stored.seq, stored.payload, head.hash) != stored.hash:
            return "hash does not match the event's payload"
        if is_sealed(stored.payload) and self.cipher is None:
            self.sealed += 1
            return ""
        try:
            kind = kind_of(decode_stored(stored, self.cipher))
        except RouterError as exc:
            return f"the payload is not an event: {exc}"
        if kind != stored.kind:
            return f"column kind says {stored.kind!r}, the payload is {kind!r}"
        return ""

    def finish(self, listed: Iterable[str]) -> None:
        """Compare the runs found in the events with the run list, and with the anchors."""
        listed = set(listed)
        for run_id in sorted(listed - self.runs.keys()):
            self.problems.append(Problem(run_id, -1, "listed as a run, but no event of it"))
        for run_id in sorted(self.runs.keys() - listed):
            self.problems.append(Problem(run_id, -1, "has events, but is not in the run list"))
        for run_id, anchor in sorted(self._anchored.items()):
            self._check_anchor(run_id, anchor)

    def _check_anchor(self, run_id: str, anchor: Anchor) -> None:
        head = self.runs.get(run_id)
        kept = anchor.seq + 1
        if head is None:
            self.problems.append(
                Problem(run_id, -1, f"missing: its {kept} anchored event(s) are gone", kept)
            )
            return
        proven = head.seq + 1  # events 0..head.seq verified
        if proven < kept:
            how = "unverifiable after a broken link" if head.broken else "cut off"
            self.problems.append(
                Problem(
                    run_id,
                    proven,
                    f"{how}: anchored events {proven}..{anchor.seq} ({kept - proven}) lost",
                    kept - proven,
                )
            )
            return
        if self._anchor_hashes.get(run_id, b"").hex() != anchor.hash:
            self.problems.append(
                Problem(
                    run_id,
                    anchor.seq,
                    "rewritten: the hash there is not the anchored one (the events up to it "
                    "were changed and re-hashed)",
                    kept,
                )
            )

    def heads(self) -> dict[str, Anchor]:
        """Each run's verified head, for an auditor to keep as anchors."""
        return {
            run_id: Anchor(head.seq, head.hash.hex())
            for run_id, head in self.runs.items()
            if head.seq >= 0
        }

    @property
    def lost(self) -> int:
        """Anchored events that the log no longer holds, or no longer proves."""
        return sum(p.lost for p in self.problems)


def anchors_to_json(anchors: Mapping[str, Anchor], **about: Any) -> bytes:
    """The anchors file ``router heads`` prints: ``{"runs": {run: {seq, hash}}, ...about}``."""
    return msgspec.json.format(
        msgspec.json.encode({**about, "runs": dict(sorted(anchors.items()))}), indent=2
    )


class _AnchorsFile(msgspec.Struct):
    runs: dict[str, Anchor]


def anchors_from_json(data: bytes, where: str) -> dict[str, Anchor]:
    """The anchors of a file ``router heads`` printed. Raises ConfigError if it is not one."""
    try:
        return msgspec.json.decode(data, type=_AnchorsFile).runs
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{where}: not an anchors file (router heads prints one): {exc}") from exc
