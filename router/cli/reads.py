"""The commands that read a log and leave it as it is: runs, show, verify, heads, export,
report, replay. Each opens the log read-only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from ..core.audit import LogAudit, Problem, anchors_from_json, anchors_to_json
from ..core.events import GraphStarted, RunStarted
from ..core.fsm import RunState
from ..core.graph_fsm import GraphState
from ..core.protocols import Store
from ..core.report import Report
from ..core.stored import decode_stored
from ..core.timeline import render
from ..errors import ConfigError, KeyMissing, LogNotIntact
from ..graph.engine import GraphEngine
from ..run.engine import Engine
from ..run.log import load_any_run, status_of
from ..store.open import is_postgres
from . import logs
from .outputs import claim_output, replacing

__all__ = ["add_commands"]

_Adder = Callable[..., argparse.ArgumentParser]
DEMO_AGENT = "support-demo"  # the demo's runs replay without --agent


def _when(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, UTC).isoformat(timespec="seconds") if at_us else ""


def _row(run_id: str, events: list[Any], state: RunState | GraphState) -> dict[str, Any]:
    first = events[0]
    graph = isinstance(first, GraphStarted)
    return {
        "run": run_id,
        "kind": "graph" if graph else "agent",
        "status": str(state.phase),
        "agent": first.graph if graph else getattr(first, "agent", ""),
        "principal": first.principal.id if isinstance(first, RunStarted | GraphStarted) else "",
        "started": _when(state.started_at),
        "last_event": type(events[-1]).__name__,
        "last_at": _when(state.last_at),
        "events": len(events),
        "steps": state.step if isinstance(state, GraphState) else state.steps,
        "cost_usd": state.cost_nusd / 1e9,
    }


def _since(text: str | None) -> int:
    if text is None:
        return 0
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"--since {text!r}: not a date or time (2026-12-01, 2026-12-01T09:30)"
        ) from exc
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1e6)


async def _runs(args: argparse.Namespace) -> int:
    since = _since(args.since)
    rows, sealed = [], 0
    async with logs.reading(args.db) as store:
        for summary in await store.runs():
            try:
                events, state = await load_any_run(store, summary.run_id, logs.cipher())
            except KeyMissing:
                sealed += 1  # its events are encrypted, and ROUTER_KEYS lacks the key
                continue
            row = _row(summary.run_id, events, state)
            if (
                (args.status is None or row["status"] == args.status)
                and (args.agent is None or row["agent"] == args.agent)
                and state.started_at >= since
            ):
                rows.append(row)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(rows), indent=2).decode())
        if sealed:  # stdout holds the JSON alone
            print(f"router: {sealed} sealed run(s) not shown: set ROUTER_KEYS", file=sys.stderr)
        return 0
    print(
        f"{'run':<24} {'status':<16} {'agent':<16} {'principal':<12} {'started':<25} "
        f"{'steps':>5} {'cost $':>10}  last event"
    )
    for r in rows:
        print(
            f"{r['run']:<24} {r['status']:<16} {r['agent']:<16} {r['principal']:<12} "
            f"{r['started']:<25} {r['steps']:>5} {r['cost_usd']:>10.6f}  {r['last_event']}"
        )
    unread = f"; {sealed} sealed run(s) not shown: set ROUTER_KEYS to read them" if sealed else ""
    print(f"{len(rows)} run(s) in {args.db}{unread}")
    return 0


async def _show(args: argparse.Namespace) -> int:
    out = claim_output(args.html, ("html",), force=args.force) if args.html else None
    async with logs.reading(args.db) as store:
        events, state = await load_any_run(store, args.run, logs.cipher())
    print(render(args.run, events, state))
    if out is not None:
        from ..core.run_page import render_page

        with replacing(out[0]) as part:
            part.write_text(render_page(args.run, events, state))
        print(f"wrote {args.html}")
    return 0


async def _audit(args: argparse.Namespace) -> LogAudit:
    """The whole log audited, with the anchors of ``--anchors`` if given."""
    anchors = None
    if getattr(args, "anchors", None):
        try:
            data = Path(args.anchors).read_bytes()
        except OSError as exc:
            raise ConfigError(f"--anchors {args.anchors}: cannot read it: {exc}") from exc
        anchors = anchors_from_json(data, args.anchors)
    audit = LogAudit(logs.cipher(), anchors)
    async with logs.reading(args.db) as store:
        after = 0
        while page := await store.scan(after=after, limit=10_000):
            audit.add(page)
            after = page[-1][0]
        summaries = await store.runs()
        audit.finish(s.run_id for s in summaries)
        await _check_statuses(store, audit, {s.run_id: s.status for s in summaries})
    return audit


async def _check_statuses(store: Store, audit: LogAudit, statuses: dict[str, str]) -> None:
    """A run's status for workers must not claim more than its log: "ended" or "waiting"
    for a run whose log is still going would hide it from every worker."""
    broken = {p.run_id for p in audit.problems}
    for run_id, recorded in statuses.items():
        if recorded == "active" or run_id in broken:
            continue
        try:
            _, state = await load_any_run(store, run_id, logs.cipher())
        except KeyMissing:
            continue
        if status_of(state) == "active":
            audit.problems.append(
                Problem(run_id, -1, f"its lease says {recorded!r} but its log is still going")
            )


async def _verify(args: argparse.Namespace) -> int:
    if args.export:
        from ..export.arrow import verify_export

        summary = verify_export(args.export, cipher=logs.cipher())
        runs, events, sealed = summary.runs, summary.events, summary.unreadable
        where = "in the export"
    else:
        audit = await _audit(args)
        for problem in audit.problems:
            print(f"FAIL {problem}", file=sys.stderr)
        if audit.problems:
            raise LogNotIntact(args.db, len(audit.problems), audit.lost)
        runs, events, sealed, where = len(audit.runs), audit.events, audit.sealed, ""
    note = f"; {sealed} sealed event(s) checked by hash only (no key)" if sealed else ""
    anchored = f"; every anchor in {args.anchors} holds" if getattr(args, "anchors", None) else ""
    print(
        f"ok: {runs} run(s), {events} event(s){' ' + where if where else ''}, "
        f"every hash chain verifies{anchored}{note}"
    )
    return 0


async def _heads(args: argparse.Namespace) -> int:
    audit = await _audit(args)
    if audit.problems:
        for problem in audit.problems:
            print(f"FAIL {problem}", file=sys.stderr)
        raise LogNotIntact(args.db, len(audit.problems), audit.lost)
    about = {"log": args.db if is_postgres(args.db) else str(Path(args.db).resolve())}
    about["taken_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    print(anchors_to_json(audit.heads(), **about).decode())
    return 0


async def _export(args: argparse.Namespace) -> int:
    from ..export.arrow import export

    out, fmt = claim_output(args.out, ("parquet", "arrow"), force=args.force)

    def progress(count: int) -> None:
        print(f"\r{count} events", end="", file=sys.stderr, flush=True)

    async with logs.reading(args.db) as store:
        with replacing(out) as part:
            summary = await export(
                store,
                part,
                format=fmt,  # type: ignore[arg-type]
                after=args.after,
                progress=progress if args.progress else None,
                cipher=logs.cipher(),
            )
    if args.progress:
        print(file=sys.stderr)
    print(
        f"exported {summary.events} event(s) of {summary.runs} run(s) to {args.out}; "
        f"watermark {summary.watermark} (next time: --after {summary.watermark})"
    )
    return 0


async def _report(args: argparse.Namespace) -> int:
    out = claim_output(args.html, ("html",), force=args.force) if args.html else None
    report = Report()
    async with logs.reading(args.db) as store:
        after, cipher = 0, logs.cipher()
        while page := await store.scan(after=after, limit=10_000):
            report.add_all((stored.run_id, decode_stored(stored, cipher)) for _, stored in page)
            after = page[-1][0]
    print(report.text())
    if out is not None:
        with replacing(out[0]) as part:
            part.write_text(report.html())
        print(f"wrote {args.html}")
    return 0


async def _replay_one(
    engine: Engine | GraphEngine, store: Store, run_id: str, spec: str
) -> str | None:
    """Replay one run; None if it is identical, else what to print. A run of another kind
    than the engine (a graph run and an agent, another graph) is refused by name, never
    reported as a divergence."""
    first = (await store.read(run_id, after=-1))[:1]
    start = decode_stored(first[0], logs.cipher()) if first else None
    graph = isinstance(start, GraphStarted)
    if graph and not isinstance(engine, GraphEngine):
        return (
            f"{run_id}: not replayed: it is a graph run; --agent {spec} gives an agent. "
            "Name a MODULE:FUNCTION that returns the GraphEngine of its graph"
        )
    if first and not graph and isinstance(engine, GraphEngine):
        return f"{run_id}: not replayed: it is an agent run; --agent {spec} gives a graph engine"
    if isinstance(start, GraphStarted) and isinstance(engine, GraphEngine):
        if start.graph != engine.graph.name:
            return (
                f"{run_id}: not replayed: it is a run of graph {start.graph!r}; "
                f"--agent {spec} gives {engine.graph.name!r}"
            )
    if isinstance(start, RunStarted) and spec == "demo" and start.agent != DEMO_AGENT:
        return (
            f"{run_id}: not replayed: agent {start.agent or '(unnamed)'!r} started it, not the "
            "demo; name its definition with --agent MODULE:FUNCTION"
        )
    report = await engine.replay(run_id)
    if report.divergence is None:
        print(f"{run_id}: identical ({report.events} events)")
        return None
    d = report.divergence
    return f"{run_id}: DIVERGES at seq {d.seq}\n  expected: {d.expected}\n  got:      {d.got}"


async def _replay(args: argparse.Namespace) -> int:
    spec = args.agent or "demo"
    async with logs.reading(args.db) as store:
        run_ids = [args.run] if args.run != "all" else [r.run_id for r in await store.runs()]
        engine = logs.definition(spec, store, args.db)
        failed = 0
        for run_id in run_ids:
            problem = await _replay_one(engine, store, run_id, spec)
            if problem is not None:
                failed += 1
                print(problem)
    return 1 if failed else 0


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--force", action="store_true", help="replace an existing file of the same format"
    )


def add_commands(sub: Any, add: _Adder) -> None:
    p = add(sub, "runs", _runs, "list the runs in a log: status, agent, spend")
    p.add_argument("--status", help="only runs in this phase (done, failed, awaiting_review...)")
    p.add_argument("--agent", help="only runs of this agent (or graph)")
    p.add_argument("--since", metavar="WHEN", help="only runs started at or after (ISO, UTC)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = add(sub, "show", _show, "print a run's timeline")
    p.add_argument("run")
    p.add_argument("--html", metavar="FILE", help="also draw the run as a page (.html)")
    _force(p)
    p = add(sub, "verify", _verify, "check every run's chain and columns, in a log or exports")
    p.add_argument(
        "--export", nargs="+", metavar="FILE", help="verify these export files (in order)"
    )
    p.add_argument(
        "--anchors",
        metavar="FILE",
        help="also prove no run kept in this heads file was cut, rewritten or deleted",
    )
    add(sub, "heads", _heads, "print each run's last seq and hash (JSON) for an auditor to keep")
    p = add(sub, "export", _export, "export the log to Parquet or an Arrow IPC file")
    p.add_argument("--out", required=True, help="the new file: .parquet, or .arrow for Arrow IPC")
    p.add_argument(
        "--after", type=int, default=0, metavar="WATERMARK", help="only events after this watermark"
    )
    p.add_argument("--progress", action="store_true", help="print progress on stderr")
    _force(p)
    p = add(sub, "replay", _replay, "replay runs and report the first divergent event")
    p.add_argument("run", help="a run id, or 'all'")
    p.add_argument(
        "--agent",
        metavar="MODULE:FUNCTION",
        help="a function that takes the store and returns the run's Engine or GraphEngine "
        "(needed unless the runs are the demo's)",
    )
    p = add(sub, "report", _report, "tokens, cost, tool outcomes and latency, from the log")
    p.add_argument("--html", metavar="FILE", help="also write an HTML page with charts")
    _force(p)
