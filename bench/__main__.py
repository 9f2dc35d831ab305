"""The bench runner: ``python -m bench [--quick] [--only NAME] [--json FILE] [--no-peers]``.

Prints a table and, with --json, writes the records (see bench/measure.py). Each workload
runs in a process of its own; within a workload, router and its peers run interleaved in
one process. Peers are
measured when installed: ``pip install -e ".[peers]"``. ``--markdown FILE`` prints the
table of a results file as Markdown (for the README).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import msgspec

from . import (
    cold_start,
    concurrent_runs,
    context,
    export,
    failover,
    fanout,
    floors,
    json_schema,
    long_run,
    memory_recall,
    parallel_tools,
    react_loop,
    resume,
    supervisor,
    validation,
)
from .measure import Record, machine
from .peers import Peer
from .peers.registry import installed_peers

Workload = Callable[[bool, list[Peer], Path], Awaitable[list[Record]]]
WORKLOADS: dict[str, Workload] = {
    "floors": floors.run,
    "react_loop": react_loop.run,
    "parallel_tools": parallel_tools.run,
    "fanout": fanout.run,
    "supervisor": supervisor.run,
    "long_run": long_run.run,
    "concurrent_runs": concurrent_runs.run,
    "resume": resume.run,
    "failover": failover.run,
    "validation": validation.run,
    "json_schema": json_schema.run,
    "cold_start": cold_start.run,
    "export": export.run,
    "context": context.run,
    "memory_recall": memory_recall.run,
}


def table(records: Sequence[Record]) -> str:
    head = (
        f"{'workload':<16} {'system':<20} {'store':<12} {'p50':>9} {'p99':>9} {'unit':<8} "
        f"{'x router':>8} {'steps/s':>8} {'commits':>7} {'B/step':>7} {'RSS MB':>6}  note"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        ratio = f"{r.vs_router:.1f}" if r.vs_router is not None else ""
        size = f"{r.bytes_per_step:.0f}" if r.bytes_per_step is not None else ""
        lines.append(
            f"{r.workload:<16} {r.system:<20} {r.store:<12} "
            f"{r.p50_us_per_step:>9.1f} {r.p99_us_per_step:>9.1f} "
            f"{r.unit:<8} {ratio:>8} {r.steps_per_s:>8.0f} {r.commits_per_step:>7.3f} {size:>7} "
            f"{r.peak_rss_mb:>6.1f}  {r.note}"
        )
    return "\n".join(lines)


def markdown(records: Sequence[Record]) -> str:
    lines = [
        "| workload | system | store | p50 | p99 | unit | x router | steps/s "
        "| commits/step | bytes/step |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in records:
        ratio = f"{r.vs_router:.1f}x" if r.vs_router is not None else ""
        size = f"{r.bytes_per_step:.0f}" if r.bytes_per_step is not None else ""
        rate = f"{r.steps_per_s:.0f}" if r.steps_per_s else ""
        lines.append(
            f"| {r.workload} | {r.system} {r.version} | {r.store} | {r.p50_us_per_step:.1f} | "
            f"{r.p99_us_per_step:.1f} | {r.unit} | {ratio} | {rate} | "
            f"{r.commits_per_step:.2f} | {size} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    parser.add_argument(
        "--only", choices=sorted(WORKLOADS), action="append", help="run only this workload"
    )
    parser.add_argument("--json", metavar="FILE", help="write the records as JSON")
    parser.add_argument("--no-peers", action="store_true", help="measure router alone")
    parser.add_argument(
        "--markdown", metavar="FILE", help="print a results file as a Markdown table and exit"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        try:
            results = msgspec.json.decode(Path(args.markdown).read_bytes(), type=list[Record])
        except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
            parser.error(f"--markdown {args.markdown}: not a results file: {exc}")
        print(markdown(results))
        return 0
    if args.json:
        _check_writable(parser, Path(args.json))  # before a run of many minutes, not after it
    names = args.only or list(WORKLOADS)
    if len(names) > 1:
        records: list[Record] = []
        failed: list[str] = []
        for name in names:
            try:
                records.extend(_in_own_process(name, args.quick, args.no_peers))
            except subprocess.CalledProcessError as exc:  # the others still run and are reported
                failed.append(name)
                print(
                    f"python -m bench: workload {name} failed (exit {exc.returncode}); going on",
                    file=sys.stderr,
                    flush=True,
                )
        # A partial run never replaces a results file: what it measured goes beside it.
        partial = f"{args.json}.partial" if args.json and failed else None
        _report(
            records, "uvloop" if _has_uvloop() else "asyncio", args.no_peers, partial or args.json
        )
        if failed:
            print(
                f"python -m bench: failed workloads, left out of the results: {', '.join(failed)}"
                + (f"; the rest is in {partial}, {args.json} is untouched" if partial else ""),
                file=sys.stderr,
            )
            return 1
        return 0
    peers = [] if args.no_peers else installed_peers()

    async def run_all() -> list[Record]:
        records: list[Record] = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.only or WORKLOADS:
                got = await WORKLOADS[name](args.quick, peers, Path(tmp))
                print(table(got).split("\n", 2)[2], file=sys.stderr, flush=True)
                records.extend(got)
        return records

    if _has_uvloop():
        records, loop = anyio.run(run_all, backend_options={"use_uvloop": True}), "uvloop"
    else:
        records, loop = anyio.run(run_all), "asyncio"
    _report(records, loop, args.no_peers, args.json)
    return 0


def _check_writable(parser: argparse.ArgumentParser, path: Path) -> None:
    """Refuse a --json path that cannot be written, creating nothing."""
    if path.is_dir():
        parser.error(f"--json {path}: is a directory")
    if not path.parent.is_dir():
        parser.error(f"--json {path}: no directory {path.parent}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        parser.error(f"--json {path}: not writable")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _in_own_process(name: str, quick: bool, no_peers: bool) -> list[Record]:
    """One workload in a new process, so that none inherits the heap another one grew
    (LangGraph's long runs leave hundreds of MB behind); within it, router and the peers
    are still measured interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        command = [sys.executable, "-m", "bench", "--only", name, "--json", str(out)]
        command += ["--quick"] * quick + ["--no-peers"] * no_peers
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1]
        )
        return msgspec.json.decode(out.read_bytes(), type=list[Record])


def _report(records: list[Record], loop: str, no_peers: bool, json_file: str | None) -> None:
    peers = (
        "none" if no_peers else ", ".join(sorted({p.system for p in installed_peers()})) or "none"
    )
    print(f"machine: {machine()}, event loop: {loop}, peers: {peers}")
    print(table(records))
    if json_file:
        Path(json_file).write_bytes(msgspec.json.format(msgspec.json.encode(records)))


if __name__ == "__main__":
    sys.exit(main())
