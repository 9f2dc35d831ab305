"""The commands that append to a run: resume it, fork it, decide what it waits on, break
its lease. Each opens an existing log for writing, and refuses any other file."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import orjson

from ..core.events import GraphStarted
from ..core.stored import decode_stored
from ..core.timeline import render
from ..errors import ConfigError, RunNotFound
from ..graph.engine import GraphEngine
from ..run.decisions import resolve_call, review_graph_run, review_run
from ..run.engine import Engine
from ..run.fork import fork_run
from ..run.log import load_any_run
from . import logs

__all__ = ["add_commands"]

# A resume that ends here did its job: the run is done, or waits for a person.
_SETTLED = ("done", "awaiting_review", "interrupted")
_Adder = Callable[..., argparse.ArgumentParser]


def _json_option(args: argparse.Namespace, name: str) -> Any:
    raw = getattr(args, name, None)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"router {args.command}: --{name} is not JSON: {exc}") from exc


async def _resume(args: argparse.Namespace) -> int:
    async with logs.writing(args.db) as store:
        engine = logs.definition(args.agent, store, args.db)
        first = (await store.read(args.run, after=-1))[:1]
        if not first:
            raise RunNotFound(args.run)
        graph = isinstance(decode_stored(first[0], logs.cipher()), GraphStarted)
        if graph != isinstance(engine, GraphEngine):
            kind = "a graph run" if graph else "an agent run"
            raise ConfigError(f"run {args.run!r} is {kind}; --agent {args.agent} gives another")
        result = await engine.resume(args.run, migration=args.migration)
        events, state = await load_any_run(store, args.run, logs.cipher())
    print(render(args.run, events, state))
    phase = str(result.phase)
    print(f"\nrun {args.run} is now {phase}")
    return 0 if phase in _SETTLED else 1


async def _fork(args: argparse.Namespace) -> int:
    async with logs.writing(args.db) as store:
        new_run_id = args.new or f"{args.run}-fork-{args.seq}"
        state = await fork_run(
            logs.runtime(store), args.run, args.seq, new_run_id=new_run_id, note=args.note
        )
    print(f"forked {args.run} at seq {args.seq} into {new_run_id}, now {state.phase}")
    return 0


async def _unlease(args: argparse.Namespace) -> int:
    async with logs.writing(args.db) as store:
        await store.break_lease(args.run)
    print(f"the lease on run {args.run} is broken; any process may resume it now")
    return 0


async def _decide(args: argparse.Namespace) -> int:
    result: Any = None
    if args.decision == "supply":
        if args.result is None:
            raise ConfigError("router decide: supply needs --result JSON")
        result = _json_option(args, "result")
    async with logs.writing(args.db) as store:
        state = await resolve_call(
            logs.runtime(store),
            args.run,
            args.call,
            args.decision,
            result=result,
            by=args.by,
            note=args.note,
        )
    print(f"recorded: {args.call} -> {args.decision}; run {args.run} is now {state.phase}")
    return 0


async def _review(args: argparse.Namespace) -> int:
    edit, arguments = _json_option(args, "edit"), _json_option(args, "replace")
    async with logs.writing(args.db) as store:
        first = await store.read(args.run, after=-1)
        if first and first[0].kind == "graph_started":
            if edit is not None or arguments is not None:
                raise ConfigError(f"router {args.command}: a graph review has no arguments to edit")
            rule = await review_graph_run(
                logs.runtime(store), args.run, args.command, by=args.by, note=args.note
            )
            print(f"recorded: {args.command} ({rule}); resume the graph run {args.run} to continue")
            return 0
        spec = getattr(args, "agent", None)
        agent = logs.definition(spec, store, args.db) if spec else None
        state = await review_run(
            logs.runtime(store),
            args.run,
            args.command,
            by=args.by,
            note=args.note,
            edit=edit,
            arguments=arguments,
            tools=agent.tools if isinstance(agent, Engine) else None,
        )
    print(f"recorded: {args.command}; run {args.run} is now {state.phase} (resume it to continue)")
    return 0


def add_commands(sub: Any, add: _Adder) -> None:
    p = add(sub, "resume", _resume, "resume a run with its agent's (or graph's) definition")
    p.add_argument("run")
    p.add_argument(
        "--agent",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function that takes the store and returns the run's Engine or GraphEngine "
        "('demo' for the demo agent)",
    )
    p.add_argument(
        "--migration",
        metavar="NAME",
        help="resume under a changed definition, recording this name for the change",
    )
    p = add(sub, "fork", _fork, "fork a run at a seq into a new run that shares its prefix")
    p.add_argument("run")
    p.add_argument("seq", type=int, help="the new run copies the events before this seq")
    p.add_argument("--new", help="the new run's id (default: RUN-fork-SEQ)")
    p.add_argument("--note", default="")
    p = add(sub, "unlease", _unlease, "break a run's lease whoever holds it (its owner is dead)")
    p.add_argument("run")
    p = add(sub, "decide", _decide, "decide an interrupted tool call")
    p.add_argument("run")
    p.add_argument("call")
    p.add_argument("decision", choices=["retry", "supply", "fail"])
    p.add_argument("--result", help="the call's result as JSON (for supply)")
    p.add_argument("--by", default="cli", help="who decides")
    p.add_argument("--note", default="")
    for verb in ("approve", "reject"):
        p = add(sub, verb, _review, f"{verb} what a run awaiting review waits on")
        p.add_argument("run")
        p.add_argument("--by", default="cli", help="who decides")
        p.add_argument("--note", default="")
        if verb == "approve":
            p.add_argument(
                "--edit",
                metavar="JSON",
                help="approve the one held call with these arguments changed (a JSON object)",
            )
            p.add_argument(
                "--replace", metavar="JSON", help="approve it with these arguments instead"
            )
            p.add_argument(
                "--agent",
                metavar="MODULE:FUNCTION",
                help="check the edited call with this agent's tools before recording it",
            )
