"""What every workload reports, and how it is measured."""

from __future__ import annotations

import gc
import platform
import resource
import statistics
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from .peers import Samples

__all__ = ["Record", "interleave", "machine", "peak_rss_mb", "percentile", "record", "settle"]


class Record(msgspec.Struct, omit_defaults=True):
    workload: str
    system: str
    version: str
    store: str
    p50_us_per_step: float
    p99_us_per_step: float
    steps_per_s: float
    peak_rss_mb: float
    commits_per_step: float
    samples: int
    bytes_per_step: float | None = None
    vs_router: float | None = None  # this p50 / router's p50 on the comparable store
    unit: str = "us/step"  # the unit of p50 and p99 (us/step, us/call, us, ms)
    note: str = ""


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def record(
    workload: str, system: str, version: str, store: str, samples: Samples, note: str = "", unit: str = "us/step"
) -> Record:
    values = samples.per_step_us
    p50 = statistics.median(values)
    per_step = unit == "us/step"
    return Record(
        workload=workload, system=system, version=version, store=store,
        p50_us_per_step=round(p50, 1), p99_us_per_step=round(percentile(values, 99), 1),
        steps_per_s=round(1e6 / p50) if p50 and per_step else 0.0, peak_rss_mb=round(peak_rss_mb(), 1),
        commits_per_step=round(samples.commits_per_step, 3), samples=len(values),
        bytes_per_step=None if samples.bytes_per_step is None else round(samples.bytes_per_step),
        unit=unit, note=note,
    )


Contestant = Callable[[int], Awaitable[Samples]]


async def interleave(contestants: dict[Any, Contestant], runs: int, rounds: int = 5) -> dict[Any, Samples]:
    """Measure every contestant in turn, round after round, so that a noisy moment of a
    shared machine falls on all of them alike. Each call measures ``n`` runs."""
    merged: dict[Any, Samples] = {}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for key, measure in contestants.items():
            settle()
            got = await measure(per_round)
            have = merged.setdefault(key, Samples(per_step_us=[], commits_per_step=got.commits_per_step,
                                                  bytes_per_step=got.bytes_per_step))
            have.per_step_us.extend(got.per_step_us)
    return merged


def settle() -> None:
    """Collect garbage and freeze what survives, so that no system pays for scanning the
    heap another one left behind (the systems share one process)."""
    gc.collect()
    gc.freeze()


def compare(records: list[Record], comparable: dict[str, str]) -> None:
    """Fill ``vs_router`` on peers' records: their p50 over router's on the store that
    promises the same (peer store name -> router store name)."""
    ours = {r.store: r.p50_us_per_step for r in records if r.system == "router"}
    for r in records:
        base = ours.get(comparable.get(r.store, r.store))
        if r.system != "router" and base:
            r.vs_router = round(r.p50_us_per_step / base, 1)


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {platform.system()}"
