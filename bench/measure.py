"""What every workload reports, and how it is measured."""

from __future__ import annotations

import gc
import platform
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from .peers import WARMUP_RUNS, Samples

__all__ = [
    "COMPARABLE",
    "Record",
    "head_to_head",
    "interleave",
    "machine",
    "peak_rss_mb",
    "peer_kinds",
    "percentile",
    "record",
    "settle",
    "time_calls",
]


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
    workload: str,
    system: str,
    version: str,
    store: str,
    samples: Samples,
    note: str = "",
    unit: str = "us/step",
) -> Record:
    values = samples.per_step_us
    p50 = statistics.median(values)
    per_step = unit in ("us/step", "us/call")  # steps (or calls) per second
    return Record(
        workload=workload,
        system=system,
        version=version,
        store=store,
        p50_us_per_step=round(p50, 1),
        p99_us_per_step=round(percentile(values, 99), 1),
        steps_per_s=round(1e6 / p50) if p50 and per_step else 0.0,
        peak_rss_mb=round(peak_rss_mb(), 1),
        commits_per_step=round(samples.commits_per_step, 3),
        samples=len(values),
        bytes_per_step=None if samples.bytes_per_step is None else round(samples.bytes_per_step),
        unit=unit,
        note=note,
    )


Contestant = Callable[[int], Awaitable[Samples]]


async def interleave(
    contestants: dict[Any, Contestant], runs: int, rounds: int = 5
) -> dict[Any, Samples]:
    """Measure every contestant in turn, round after round, so that a noisy moment of a
    shared machine falls on all of them alike. Each call measures ``n`` runs."""
    merged: dict[Any, Samples] = {}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for key, measure in contestants.items():
            settle()
            got = await measure(per_round)
            have = merged.setdefault(
                key,
                Samples(
                    per_step_us=[],
                    commits_per_step=got.commits_per_step,
                    bytes_per_step=got.bytes_per_step,
                ),
            )
            have.per_step_us.extend(got.per_step_us)
    return merged


def time_calls(fn: Callable[[], object], n: int, inner: int = 1, warmup: int = 0) -> list[float]:
    """Microseconds per call of ``fn``: ``n`` samples, each the mean of ``inner`` calls,
    after ``warmup`` calls that are not timed."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        begin = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter_ns() - begin) / inner / 1000)
    return out


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


def peer_kinds(peer: Any, kinds: Sequence[str], comparable: dict[str, str]) -> list[str]:
    """The peer's stores whose comparable router store is among ``kinds``: a peer is not
    measured on PostgreSQL where router is not."""
    return [k for k in peer.stores if comparable.get(k, k) in kinds]


COMPARABLE = {"none": "memory", "memory": "memory", "sqlite": "commit"}


def machine() -> str:
    return (
        f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()}"
    )


async def head_to_head(
    workload: str,
    *,
    one_run: Callable[[Any], Callable[[], Awaitable[Any]]],
    check: Callable[[Any], None],
    steps: int,
    peers: Sequence[Any],
    method: str,
    peer_options: dict[str, Any],
    runs: int,
    tmp: Any,
    kinds: Sequence[str] = ("memory", "commit"),
    comparable: dict[str, str] | None = None,
) -> list[Record]:
    """Router on each store against every peer that has the workload, interleaved.

    one_run(store) gives a coroutine function for one whole router run; check(result)
    asserts it did the work (outside the timed region); steps divides a run's time.
    method: the peers' method for the workload (``peer.<method>(store, runs=n, tmp=tmp,
    **peer_options)``); peers without it are left out.
    """
    from .system import PROMISES, VERSION, open_store, write_transactions

    comparable = comparable or COMPARABLE
    contestants: dict[Any, Contestant] = {}
    stores = []
    for kind in kinds:
        store = await open_store(kind, tmp)
        stores.append(store)
        run_of_store = one_run(store)

        async def measure(
            n: int, run: Callable[[], Awaitable[Any]] = run_of_store, store: Any = store
        ) -> Samples:
            for _ in range(WARMUP_RUNS):  # as each peer does at the start of its slot
                check(await run())
            before = write_transactions(store)
            per_step = []
            for _ in range(n):
                begin = time.perf_counter_ns()
                result = await run()
                per_step.append((time.perf_counter_ns() - begin) / 1000 / steps)
                check(result)
            return Samples(
                per_step, commits_per_step=(write_transactions(store) - before) / (n * steps)
            )

        await measure(5)  # warm up
        contestants[("router", VERSION, kind)] = measure
    for peer in peers:
        workload_of = getattr(peer, method, None)
        if workload_of is None:
            continue
        for kind in peer_kinds(peer, kinds, comparable):

            async def peer_measure(n: int, measure: Any = workload_of, kind: str = kind) -> Samples:
                samples: Samples = measure(kind, runs=n, tmp=tmp, **peer_options)
                return samples

            contestants[(peer.system, peer.version, kind)] = peer_measure
    results = await interleave(contestants, runs)
    for store in stores:
        await store.aclose()
    records = [
        record(workload, s, v, k, results[(s, v, k)], PROMISES.get(k, "") if s == "router" else "")
        for (s, v, k) in contestants
    ]
    compare(records, comparable)
    return records
