"""The bench runner: ``python -m bench [--quick] [--only NAME] [--json FILE]``.

Prints a table and, with --json, writes a list of records (see bench/measure.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio
import msgspec

from . import react_loop
from .measure import Record, machine

WORKLOADS: dict[str, Callable[[bool], Awaitable[Sequence[Record]]]] = {
    "react_loop": react_loop.run,
}


def table(records: Sequence[Record]) -> str:
    head = f"{'workload':<12} {'system':<8} {'store':<8} {'p50 us/step':>11} {'p99 us/step':>11} {'steps/s':>9} {'commits/step':>12} {'RSS MB':>7}  promise"
    lines = [head, "-" * len(head)]
    for r in records:
        lines.append(
            f"{r.workload:<12} {r.system:<8} {r.store:<8} {r.p50_us_per_step:>11.1f} {r.p99_us_per_step:>11.1f} "
            f"{r.steps_per_s:>9.0f} {r.commits_per_step:>12.3f} {r.peak_rss_mb:>7.1f}  {r.note}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append", help="run only this workload")
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")
    args = parser.parse_args(argv)

    async def run_all() -> list[Record]:
        records: list[Record] = []
        for name in args.only or WORKLOADS:
            records.extend(await WORKLOADS[name](args.quick))
        return records

    try:
        import uvloop  # noqa: F401

        records = anyio.run(run_all, backend_options={"use_uvloop": True})
        loop = "uvloop"
    except ImportError:
        records = anyio.run(run_all)
        loop = "asyncio"
    print(f"machine: {machine()}, event loop: {loop}")
    print(table(records))
    if args.json:
        with open(args.json, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
