"""The ``router`` command: a demo agent and the operator's view of a log.

    router demo [--db FILE] [--model openai|anthropic --base-url URL]
                                     run the demo agent, print its timeline
    router runs [--db FILE]          list the runs in a log
    router show RUN [--db FILE]      print one run's timeline
    router verify [--db FILE]        check every run's hash chain
    router verify --export FILE...   the same, from export files alone
    router export --out FILE [--db FILE] [--after WATERMARK]   Parquet or Arrow IPC
    router replay RUN|all [--agent MODULE:FUNCTION]   re-drive runs, report the first divergence
    router report [--html FILE]      tokens, cost, tool outcomes, latency per run, model and tool
    router fork RUN SEQ [--new ID]   a new run with the events before SEQ, to continue differently
    router decide RUN CALL retry|supply|fail [--result JSON] [--by NAME] [--note TEXT]
    router approve RUN [--edit JSON | --replace JSON] [--agent M:F] / router reject RUN
    router fsm [--graph]             print the loop's (or a graph run's) transition table (Mermaid)
    router conformance DIR           JSON Schema conformance: official suite, real tool schemas

An encrypted log needs its keys in ROUTER_KEYS ("id=hex,id=hex", the first seals new
events); ``verify`` checks the chain of sealed events without them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import msgspec
import orjson

from ..core import fsm
from ..core.chain import verify
from ..core.events import GraphStarted
from ..core.graph_fsm import fold_graph, graph_mermaid
from ..core.protocols import Cipher, Store
from ..core.report import Report
from ..core.stored import decode_stored
from ..core.timeline import render
from ..errors import ConfigError, RouterError
from ..graph.engine import GraphEngine
from ..run.decisions import resolve_call, review_graph_run, review_run
from ..run.engine import Engine
from ..run.fork import fork_run
from ..run.log import load_run, open_log
from ..run.runtime import Runtime
from ..store.open import is_postgres, open_store
from ..store.sqlite import Durability, SqliteStore
from . import demo, ops

__all__ = ["main"]


def run_async(fn: Callable[[], Awaitable[int]]) -> int:
    """Run on asyncio, with uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


def _cipher() -> Cipher | None:
    """The keys in ROUTER_KEYS ("id=hex,id=hex", the first one active), if set."""
    spec = os.environ.get("ROUTER_KEYS", "").strip()
    if not spec:
        return None
    from ..crypto import AesGcmCipher

    keys: dict[str, bytes] = {}
    for item in spec.split(","):
        key_id, _, hex_key = item.strip().partition("=")
        try:
            keys[key_id] = bytes.fromhex(hex_key)
        except ValueError as exc:
            raise ConfigError(f"ROUTER_KEYS: key {key_id!r} is not hex") from exc
    return AesGcmCipher(keys, active=next(iter(keys)))


def _runtime(store: Store) -> Runtime:
    return Runtime(store, cipher=_cipher())


_crm_path = demo.crm_path


def _demo_model(args: argparse.Namespace) -> Any:
    """The scripted demo model, or a real provider's adapter (needs the providers extra)."""
    if args.model == "scripted":
        return None
    try:
        if args.model == "openai":
            from ..models.openai import OpenAIModel as Adapter
        else:
            from ..models.anthropic import AnthropicModel as Adapter  # type: ignore[assignment]
    except ImportError as exc:
        raise ConfigError(
            f"--model {args.model} needs the providers extra (pip install -e '.[providers]'): {exc}"
        ) from exc
    default = {
        "openai": ("gpt-4o-mini", "https://api.openai.com/v1"),
        "anthropic": ("claude-sonnet-4-5", "https://api.anthropic.com/v1"),
    }[args.model]
    on_delta = (lambda d: print(d.text, end="", flush=True)) if args.stream else None
    return Adapter(
        args.model_name or default[0],
        base_url=args.base_url or default[1],
        stream=args.stream,
        on_delta=on_delta,
    )


async def _demo(args: argparse.Namespace) -> int:
    if args.part == "memory":
        return await _memory_demo(args)
    model = _demo_model(args)
    try:
        async with SqliteStore.open(args.db, args.durability) as store:
            engine = demo.demo_engine(_runtime(store), _crm_path(args.db), model=model)
            if args.resume:
                result = await engine.resume(args.resume)
            else:
                result = await engine.start(demo.QUESTION, principal=demo.PRINCIPAL)
            events, state, _ = await load_run(store, result.run_id, engine.runtime.cipher)
            print(render(result.run_id, events, state))
    finally:
        if model is not None:
            await model.aclose()
    print(
        f"\nlog: {args.db}   "
        f"(router show {result.run_id} --db {args.db}; router verify --db {args.db})"
    )
    return 0


async def _runs(args: argparse.Namespace) -> int:
    async with open_store(args.db) as store:
        runs = await store.runs()
        print(f"{'run':<24} {'events':>6}  last event")
        for r in runs:
            print(f"{r.run_id:<24} {r.events:>6}  {r.last_kind}")
        print(f"{len(runs)} run(s) in {args.db}")
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with open_store(args.db) as store:
        events, _ = await open_log(_runtime(store), args.run, lease=False)
    graph = isinstance(events[0], GraphStarted)
    print(render(args.run, events, fold_graph(None, events) if graph else fsm.fold(events)))
    return 0


async def _verify(args: argparse.Namespace) -> int:
    if args.export:
        from ..export.arrow import verify_export

        summary = verify_export(args.export, cipher=_cipher())
        sealed = (
            f"; {summary.unreadable} sealed event(s) checked by hash only (no key)"
            if summary.unreadable
            else ""
        )
        print(
            f"ok: {summary.runs} run(s), {summary.events} event(s) in the export, "
            f"every hash chain verifies{sealed}"
        )
        return 0
    cipher = _cipher()
    async with open_store(args.db) as store:
        total = unread = 0
        runs = await store.runs()
        for r in runs:
            stored = await store.read(r.run_id)
            total += verify(stored)
            for s in stored:  # every payload must also be an event this router knows
                if s.payload[:1] == b"{" or cipher is not None:
                    decode_stored(s, cipher)
                else:
                    unread += 1
    sealed = f"; {unread} sealed event(s) checked by hash only (no key)" if unread else ""
    print(f"ok: {len(runs)} run(s), {total} event(s), every hash chain verifies{sealed}")
    return 0


def _agent(spec: str, store: Store, db: str) -> Engine | GraphEngine:
    """The engine named by --agent MODULE:FUNCTION, called with the store (or the demo's):
    an Engine for agent runs or a GraphEngine for graph runs."""
    if spec == "demo":
        return demo.demo_engine(_runtime(store), _crm_path(db))
    engine = ops.load_factory("--agent", spec)(store)
    if not isinstance(engine, Engine | GraphEngine):
        raise ConfigError(
            f"--agent {spec!r} returned {type(engine).__name__}, not an Engine or a GraphEngine"
        )
    return engine


async def _replay_one(
    engine: Engine | GraphEngine, store: Store, run_id: str, spec: str
) -> str | None:
    """Replay one run; None if it is identical, else what to print. A run of another kind
    than the engine (a graph run and an agent, another graph) is refused by name, never
    reported as a divergence."""
    first = (await store.read(run_id, after=-1))[:1]
    graph = first[0].kind == "graph_started" if first else False
    if graph and not (isinstance(engine, GraphEngine)):
        return (
            f"{run_id}: not replayed: it is a graph run; --agent {spec} gives an agent. "
            "Name a MODULE:FUNCTION that returns the GraphEngine of its graph"
        )
    if first and not graph and isinstance(engine, GraphEngine):
        return f"{run_id}: not replayed: it is an agent run; --agent {spec} gives a graph engine"
    if graph and isinstance(engine, GraphEngine):
        events, _ = await open_log(engine.runtime, run_id, lease=False)
        name = events[0].graph if isinstance(events[0], GraphStarted) else ""
        if name != engine.graph.name:
            return (
                f"{run_id}: not replayed: it is a run of graph {name!r}; "
                f"--agent {spec} gives {engine.graph.name!r}"
            )
    report = await engine.replay(run_id)
    if report.divergence is None:
        print(f"{run_id}: identical ({report.events} events)")
        return None
    d = report.divergence
    return f"{run_id}: DIVERGES at seq {d.seq}\n  expected: {d.expected}\n  got:      {d.got}"


async def _replay(args: argparse.Namespace) -> int:
    async with open_store(args.db) as store:
        run_ids = [args.run] if args.run != "all" else [r.run_id for r in await store.runs()]
        engine = _agent(args.agent, store, args.db)
        failed = 0
        for run_id in run_ids:
            problem = await _replay_one(engine, store, run_id, args.agent)
            if problem is not None:
                failed += 1
                print(problem)
    return 1 if failed else 0


async def _report(args: argparse.Namespace) -> int:
    report = Report()
    async with open_store(args.db) as store:
        after = 0
        cipher = _cipher()
        while page := await store.scan(after=after, limit=10_000):
            report.add_all((stored.run_id, decode_stored(stored, cipher)) for _, stored in page)
            after = page[-1][0]
    print(report.text())
    if args.html:
        Path(args.html).write_text(report.html())
        print(f"wrote {args.html}")
    return 0


async def _fork(args: argparse.Namespace) -> int:
    async with open_store(args.db) as store:
        new_run_id = args.new or f"{args.run}-fork-{args.seq}"
        state = await fork_run(
            _runtime(store), args.run, args.seq, new_run_id=new_run_id, note=args.note
        )
    print(f"forked {args.run} at seq {args.seq} into {new_run_id}, now {state.phase}")
    return 0


async def _unlease(args: argparse.Namespace) -> int:
    async with open_store(args.db) as store:
        await store.break_lease(args.run)
    print(f"the lease on run {args.run} is broken; any process may resume it now")
    return 0


async def _export(args: argparse.Namespace) -> int:
    from ..export.arrow import export

    def progress(count: int) -> None:
        print(f"\r{count} events", end="", file=sys.stderr, flush=True)

    async with open_store(args.db) as store:
        summary = await export(
            store,
            args.out,
            format=args.format,
            after=args.after,
            progress=progress if args.progress else None,
            cipher=_cipher(),
        )
    if args.progress:
        print(file=sys.stderr)
    print(
        f"exported {summary.events} event(s) of {summary.runs} run(s) to {args.out}; "
        f"watermark {summary.watermark} (next time: --after {summary.watermark})"
    )
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
    async with open_store(args.db) as store:
        state = await resolve_call(
            _runtime(store),
            args.run,
            args.call,
            args.decision,
            result=result,
            by=args.by,
            note=args.note,
        )
    print(f"recorded: {args.call} -> {args.decision}; run {args.run} is now {state.phase}")
    return 0


def _json_option(args: argparse.Namespace, name: str) -> Any:
    raw = getattr(args, name, None)
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SystemExit(f"router {args.command}: --{name} is not JSON: {exc}") from exc


async def _review(args: argparse.Namespace) -> int:
    edit, arguments = _json_option(args, "edit"), _json_option(args, "replace")
    async with open_store(args.db) as store:
        first = await store.read(args.run, after=-1)
        if first and first[0].kind == "graph_started":
            if edit is not None or arguments is not None:
                raise SystemExit(f"router {args.command}: a graph review has no arguments to edit")
            rule = await review_graph_run(
                _runtime(store), args.run, args.command, by=args.by, note=args.note
            )
            print(f"recorded: {args.command} ({rule}); resume the graph run {args.run} to continue")
            return 0
        agent = _agent(args.agent, store, args.db) if getattr(args, "agent", None) else None
        state = await review_run(
            _runtime(store),
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


async def _conformance(args: argparse.Namespace) -> int:
    from . import conformance

    folder = Path(args.folder)
    for part in ("json-schema-test-suite/draft2020-12", "tool-schemas/bfcl"):
        if not (folder / part).is_dir():
            print(f"router: {folder / part} is not a folder", file=sys.stderr)
            return 2
    suite = conformance.check_suite(folder / "json-schema-test-suite" / "draft2020-12")
    tool_schemas = conformance.check_tool_schemas(folder / "tool-schemas" / "bfcl")
    print(conformance.render(suite, tool_schemas))
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps(
                {"suite": suite, "tool_schemas": tool_schemas}, default=msgspec.to_builtins
            )
        )
    return 0 if conformance.conforms(suite, tool_schemas) else 1


async def _fsm(args: argparse.Namespace) -> int:
    print(graph_mermaid() if args.graph else fsm.mermaid())
    return 0


_Command = Callable[[argparse.Namespace], Awaitable[int]]
# a string: the class is generic only to type checkers
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router", description="A deterministic LLM orchestration router."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_log_readers(sub)
    _add_run_changers(sub)
    _add_offline(sub)
    ops.add_commands(sub, _add)
    return parser


async def _memory_demo(args: argparse.Namespace) -> int:
    """Two runs: a long one through a small context window that ends by remembering what it
    found, and a follow-up that recalls it."""
    from ..store.sqlite_memory import SqliteMemory
    from . import memory_demo

    async with (
        SqliteStore.open(args.db, args.durability) as store,
        SqliteMemory.open(args.db) as memory,
    ):
        runtime, remembering = _runtime(store), memory_demo.demo_memory(memory)
        ids = []
        for follow_up, question in ((False, memory_demo.TASK), (True, memory_demo.FOLLOW_UP)):
            engine = memory_demo.memory_engine(runtime, remembering, follow_up=follow_up)
            result = await engine.start(question, principal=memory_demo.PRINCIPAL)
            events, state, _ = await load_run(store, result.run_id, runtime.cipher)
            print(render(result.run_id, events, state), end="\n\n")
            ids.append(result.run_id)
    print(f"log and memory: {args.db}   (router show {ids[0]} --db {args.db})")
    return 0


def _add(sub: _Commands, name: str, fn: _Command, help: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``fn``; every one that reads or writes a log takes --db."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(fn=fn)
    if name not in ("fsm", "conformance", "migrate"):
        p.add_argument(
            "--db",
            default="router.db",
            help="the log: a SQLite file, or a postgresql:// URL (default: router.db)",
        )
    return p


def _add_demo(sub: _Commands) -> None:
    p = _add(sub, "demo", _demo, "run the demo agent on a SQLite log and print its timeline")
    p.add_argument(
        "part",
        nargs="?",
        choices=["support", "memory"],
        default="support",
        help="support: the support agent (default); memory: a long run through a small "
        "context window, and a note recalled in the next run",
    )
    p.add_argument("--durability", choices=[d.value for d in Durability], default="commit")
    p.add_argument("--resume", metavar="RUN", help="resume a demo run instead of starting one")
    p.add_argument(
        "--model",
        choices=["scripted", "openai", "anthropic"],
        default="scripted",
        help="the scripted model (default), or a provider: openai for any OpenAI-compatible server "
        "(OPENAI_API_KEY), anthropic (ANTHROPIC_API_KEY); needs the providers extra",
    )
    p.add_argument(
        "--base-url", help="the provider's base URL, e.g. http://localhost:11434/v1 for Ollama"
    )
    p.add_argument(
        "--model-name", help="the model to ask for (default: gpt-4o-mini or claude-sonnet-4-5)"
    )
    p.add_argument("--stream", action="store_true", help="stream the model's text as it arrives")


def _add_log_readers(sub: _Commands) -> None:
    """The commands that read a log (or export files) and leave it as it is."""
    _add(sub, "runs", _runs, "list the runs in a log")
    _add(sub, "show", _show, "print a run's timeline").add_argument("run")
    _add(
        sub, "verify", _verify, "check every run's hash chain, in the log or in export files"
    ).add_argument(
        "--export",
        nargs="+",
        metavar="FILE",
        help="verify these export files (in order) instead of the log",
    )
    p = _add(sub, "export", _export, "export the log to Parquet or an Arrow IPC file")
    p.add_argument(
        "--out", required=True, help="the file to write (.parquet, or .arrow for Arrow IPC)"
    )
    p.add_argument("--format", choices=["parquet", "arrow"], help="default: from the file's suffix")
    p.add_argument(
        "--after", type=int, default=0, metavar="WATERMARK", help="only events after this watermark"
    )
    p.add_argument("--progress", action="store_true", help="print progress on stderr")
    p = _add(
        sub, "replay", _replay, "replay runs from the log and report the first divergent event"
    )
    p.add_argument("run", help="a run id, or 'all'")
    p.add_argument(
        "--agent",
        default="demo",
        metavar="MODULE:FUNCTION",
        help="a function that takes the store and returns the Engine (default: the demo agent)",
    )
    _add(
        sub, "report", _report, "tokens, cost, tool outcomes and latency, from the log"
    ).add_argument("--html", metavar="FILE", help="also write an HTML page with charts")


def _add_run_changers(sub: _Commands) -> None:
    """The commands that append to a run: fork it, or decide what it waits on."""
    p = _add(sub, "fork", _fork, "fork a run at a seq into a new run that shares its prefix")
    p.add_argument("run")
    p.add_argument("seq", type=int, help="the new run copies the events before this seq")
    p.add_argument("--new", help="the new run's id (default: RUN-fork-SEQ)")
    p.add_argument("--note", default="")
    p = _add(sub, "unlease", _unlease, "break a run's lease whoever holds it (its owner is dead)")
    p.add_argument("run")
    p = _add(sub, "decide", _decide, "decide an interrupted tool call")
    p.add_argument("run")
    p.add_argument("call")
    p.add_argument("decision", choices=["retry", "supply", "fail"])
    p.add_argument("--result", help="the call's result as JSON (for supply)")
    p.add_argument("--by", default="cli", help="who decides")
    p.add_argument("--note", default="")
    for verb in ("approve", "reject"):
        p = _add(sub, verb, _review, f"{verb} what a run awaiting review waits on")
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


def _add_offline(sub: _Commands) -> None:
    """The commands that need no log."""
    _add(
        sub, "fsm", _fsm, "print the loop's transition table as a Mermaid state diagram"
    ).add_argument("--graph", action="store_true", help="a graph run's transition table instead")
    p = _add(
        sub,
        "conformance",
        _conformance,
        "check the JSON Schema compiler against the official test suite "
        "and real tool schemas; exits 1 on any failure",
    )
    p.add_argument("folder", help="holds json-schema-test-suite/draft2020-12 and tool-schemas/bfcl")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (
        getattr(args, "db", None)
        and args.command != "demo"
        and not getattr(args, "export", None)
        and not is_postgres(args.db)
        and not Path(args.db).exists()
    ):
        print(f"router: no log at {args.db}", file=sys.stderr)
        return 2
    try:
        return run_async(lambda: args.fn(args))
    except RouterError as exc:
        print(f"router: {exc.code}: {exc}", file=sys.stderr)
        return 1
