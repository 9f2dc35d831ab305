"""The ``router`` command: a demo agent and the operator's view of a log.

    router demo [--db FILE]          run the demo agent and print its timeline
    router runs [--db FILE]          list the runs in a log
    router show RUN [--db FILE]      print one run's timeline
    router verify [--db FILE]        check every run's hash chain
    router decide RUN CALL retry|supply|fail [--result JSON] [--by NAME] [--note TEXT]
    router fsm                       print the loop's transition table (Mermaid)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson

from . import demo, fsm
from .engine import Engine, load_run, resolve_call
from .errors import RouterError
from .store.sqlite import Durability, SqliteStore
from .timeline import render

__all__ = ["main"]


def run_async(fn: Callable[[], Awaitable[int]]) -> int:
    """Run on asyncio, with uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


def _crm_path(db: str) -> Path:
    return Path(db).with_name(Path(db).stem + "-crm.sqlite")


async def _demo(args: argparse.Namespace) -> int:
    async with SqliteStore.open(args.db, args.durability) as store:
        engine = Engine(store, demo.demo_model(), demo.demo_tools(_crm_path(args.db)),
                        limits=demo.LIMITS, prices=demo.PRICES)
        if args.resume:
            result = await engine.resume(args.resume)
        else:
            result = await engine.start(demo.QUESTION, principal=demo.PRINCIPAL)
        events, state, _ = await load_run(store, result.run_id)
        print(render(result.run_id, events, state))
    print(f"\nlog: {args.db}   (router show {result.run_id} --db {args.db}; router verify --db {args.db})")
    return 0


async def _runs(args: argparse.Namespace) -> int:
    async with SqliteStore.open(args.db) as store:
        runs = await store.runs()
        print(f"{'run':<24} {'events':>6}  last event")
        for r in runs:
            print(f"{r.run_id:<24} {r.events:>6}  {r.last_kind}")
        print(f"{len(runs)} run(s) in {args.db}")
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with SqliteStore.open(args.db) as store:
        events, state, _ = await load_run(store, args.run)
    print(render(args.run, events, state))
    return 0


async def _verify(args: argparse.Namespace) -> int:
    async with SqliteStore.open(args.db) as store:
        total = 0
        runs = await store.runs()
        for r in runs:
            events, _, _ = await load_run(store, r.run_id)  # verifies the chain, decodes every event
            total += len(events)
    print(f"ok: {len(runs)} run(s), {total} event(s), every hash chain verifies")
    return 0


async def _decide(args: argparse.Namespace) -> int:
    result: Any = None
    if args.decision == "supply":
        if args.result is None:
            raise SystemExit("router decide: supply needs --result JSON")
        try:
            result = orjson.loads(args.result)
        except orjson.JSONDecodeError as exc:
            raise SystemExit(f"router decide: --result is not JSON: {exc}") from exc
    async with SqliteStore.open(args.db) as store:
        state = await resolve_call(store, args.run, args.call, args.decision, result=result, by=args.by, note=args.note)
    print(f"recorded: {args.call} -> {args.decision}; run {args.run} is now {state.phase}")
    return 0


async def _fsm(args: argparse.Namespace) -> int:
    print(fsm.mermaid())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="A deterministic LLM orchestration router.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], Awaitable[int]], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        if name != "fsm":
            p.add_argument("--db", default="router.db", help="the SQLite log (default: router.db)")
        return p

    p = add("demo", _demo, "run the demo agent on a SQLite log and print its timeline")
    p.add_argument("--durability", choices=[d.value for d in Durability], default="commit")
    p.add_argument("--resume", metavar="RUN", help="resume a demo run instead of starting one")
    add("runs", _runs, "list the runs in a log")
    add("show", _show, "print a run's timeline").add_argument("run")
    add("verify", _verify, "check every run's hash chain")
    p = add("decide", _decide, "decide an interrupted tool call")
    p.add_argument("run")
    p.add_argument("call")
    p.add_argument("decision", choices=["retry", "supply", "fail"])
    p.add_argument("--result", help="the call's result as JSON (for supply)")
    p.add_argument("--by", default="cli", help="who decides")
    p.add_argument("--note", default="")
    add("fsm", _fsm, "print the loop's transition table as a Mermaid state diagram")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "db", None) and args.command != "demo" and not Path(args.db).exists():
        print(f"router: no log at {args.db}", file=sys.stderr)
        return 2
    try:
        return run_async(lambda: args.fn(args))
    except RouterError as exc:
        print(f"router: {exc.code}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
