"""Copying logs: an online backup of a SQLite log, and a migration of every run from one
store to another (SQLite to PostgreSQL and back). Both verify every chain they copy.

A migration is resumable: it copies, run by run, only the events the target lacks, after
checking that what the target holds is the same prefix (the same hashes); interrupted, it
is simply run again. Each run's status for workers goes with its last batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
import msgspec

from ..core.chain import verify
from ..core.protocols import Fence, Store
from ..errors import ChainBroken, StoreError
from .sqlite_file import store_error

__all__ = ["Copied", "backup_sqlite", "migrate"]

MIGRATION_OWNER = "router-migrate"


class Copied(msgspec.Struct, frozen=True):
    runs: int  # runs whose chains verified in the target
    events: int  # events in those runs
    copied: int  # events this call wrote (the rest were there already)


async def migrate(
    source: Store,
    target: Store,
    *,
    progress: Callable[[int, int, int], None] | None = None,
) -> Copied:
    """Copy every run of ``source`` into ``target``: the events it lacks, each run's chain
    verified in the source before and in the target after. ``progress(runs_done,
    runs_total, events_copied)`` is called as it goes.

    Raises ChainBroken if a chain does not verify, StoreError if the target holds a
    different history for a run (a divergent prefix)."""
    there = {s.run_id: s.events for s in await target.runs()}
    summaries = await source.runs()
    total_events = copied = 0
    for done, summary in enumerate(summaries, 1):
        run_id = summary.run_id
        events = await source.read(run_id)
        verify(events)
        have = there.get(run_id, 0)
        if have > len(events):
            raise StoreError(f"run {run_id!r}: the target holds more events than the source")
        if have:
            held = await target.read(run_id, after=have - 2)
            if held[-1].hash != events[have - 1].hash:
                raise StoreError(f"run {run_id!r}: the target holds a different history")
        rest = events[have:]
        if rest:
            fence = Fence(MIGRATION_OWNER, 0, 0.0, True, summary.status)
            await target.append(rest, fence=fence)
            copied += len(rest)
        if verify(await target.read(run_id)) != len(events):
            raise ChainBroken(run_id, len(events), "the copy does not hold every event")
        total_events += len(events)
        if progress is not None:
            progress(done, len(summaries), copied)
    return Copied(len(summaries), total_events, copied)


async def backup_sqlite(source: str | Path, out: str | Path) -> Copied:
    """An online backup of the SQLite log at ``source`` into a new file ``out`` (SQLite's
    backup API: writers go on meanwhile), then every chain in the copy verified."""
    from .sqlite import SqliteStore

    out = Path(out)
    if out.exists():
        raise StoreError(f"{out} exists; a backup is written to a new file")

    if not Path(source).is_file():
        raise StoreError(f"{source}: no such file")
    if not out.parent.is_dir():
        raise StoreError(f"{out}: the folder {out.parent} does not exist")

    def copy() -> None:
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(out)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()

    try:
        await anyio.to_thread.run_sync(copy)
    except sqlite3.Error as exc:
        out.unlink(missing_ok=True)
        raise store_error(str(source), "the backup", exc) from exc
    async with SqliteStore.open(out) as copied:
        runs = await copied.runs()
        events = 0
        for summary in runs:
            events += verify(await copied.read(summary.run_id))
    return Copied(len(runs), events, events)
