"""What every workload reports, and how it is measured."""

from __future__ import annotations

import platform
import resource
import statistics
import sys
from collections.abc import Sequence

import msgspec

__all__ = ["Record", "machine", "peak_rss_mb", "percentile", "summarize"]


class Record(msgspec.Struct):
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
    note: str = ""
    bytes_per_step: float | None = None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def summarize(per_step_us: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p99, steps per second) from per-step times in microseconds."""
    p50 = statistics.median(per_step_us)
    return p50, percentile(per_step_us, 99), 1e6 / p50 if p50 else 0.0


def machine() -> str:
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}, {platform.system()}"
