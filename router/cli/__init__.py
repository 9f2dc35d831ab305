"""The ``router`` command: a demo agent and the operator's view of a log.

    router demo [--db FILE] [--model openai|anthropic --base-url URL]
                                     run the demo agent, print its timeline
    router runs [--status S] [--agent A] [--since WHEN] [--json]
                                     the runs in a log: status, agent, principal, spend
    router show RUN [--html FILE]    print one run's timeline (and draw it as a page)
    router verify [--anchors FILE]   check every run's chain and columns (and the anchors)
    router verify --export FILE...   the same, from export files alone
    router heads                     each run's last seq and hash, JSON, for an auditor
    router export --out FILE [--after WATERMARK]   Parquet (.parquet) or Arrow IPC (.arrow)
    router replay RUN|all [--agent MODULE:FUNCTION]   re-drive runs, report the first divergence
    router report [--html FILE]      tokens, cost, tool outcomes, latency per run, model and tool
    router resume RUN --agent MODULE:FUNCTION [--migration NAME]   continue a run
    router fork RUN SEQ [--new ID]   a new run with the events before SEQ, to continue differently
    router decide RUN CALL retry|supply|fail [--result JSON] [--by NAME] [--note TEXT]
    router approve RUN [--edit JSON | --replace JSON] [--agent M:F] / router reject RUN
    router worker / backup / migrate / unlease   see ``router COMMAND --help``
    router fsm [--graph]             print the loop's (or a graph run's) transition table (Mermaid)
    router conformance DIR           JSON Schema conformance: official suite, real tool schemas

Every command takes --db (a SQLite file, default router.db, or a postgresql:// URL). The
commands that read open the log read-only; none writes a file over another without
--force, or over a database ever. A failure prints ``router: CODE: message`` on stderr and
exits non-zero. An encrypted log needs its keys in ROUTER_KEYS ("id=hex,id=hex", the first
seals new events); ``verify`` checks the chain of sealed events without them.
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

from .. import __version__
from ..core import fsm
from ..core.graph_fsm import graph_mermaid
from ..core.timeline import render
from ..errors import ConfigError, RouterError
from ..run.log import load_run
from ..store.open import is_postgres
from ..store.sqlite import Durability, SqliteStore
from . import changes, demo, logs, ops, reads
from .outputs import claim_output, replacing

__all__ = ["main"]


def run_async(fn: Callable[[], Awaitable[int]]) -> int:
    """Run on asyncio, with uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


_crm_path = demo.crm_path
_runtime = logs.runtime


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
    if result.phase != "done":
        print(f"router: the demo run ended {result.phase}: {result.reason}", file=sys.stderr)
        return 1
    return 0


async def _conformance(args: argparse.Namespace) -> int:
    from . import conformance

    folder = Path(args.folder)
    for sub in ("json-schema-test-suite/draft2020-12", "tool-schemas/bfcl"):
        if not (folder / sub).is_dir():
            print(f"router: {folder / sub} is not a folder", file=sys.stderr)
            return 2
    out = claim_output(args.json, ("json",), force=args.force) if args.json else None
    suite = conformance.check_suite(folder / "json-schema-test-suite" / "draft2020-12")
    tool_schemas = conformance.check_tool_schemas(folder / "tool-schemas" / "bfcl")
    print(conformance.render(suite, tool_schemas))
    if out is not None:
        figures = {"suite": suite, "tool_schemas": tool_schemas}
        with replacing(out[0]) as part:
            part.write_bytes(orjson.dumps(figures, default=msgspec.to_builtins))
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
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    reads.add_commands(sub, _add)
    changes.add_commands(sub, _add)
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
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON (.json)")
    p.add_argument("--force", action="store_true", help="replace an existing JSON file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. A failure is ``router: CODE: message`` on stderr
    with a non-zero status, never a traceback."""
    args = _parser().parse_args(argv)
    db = getattr(args, "db", None)
    if db and args.command != "demo" and not is_postgres(db) and not Path(db).exists():
        if not (args.command == "verify" and args.export):
            print(f"router: store_error: no log at {db}", file=sys.stderr)
            return 2
    try:
        return run_async(lambda: args.fn(args))
    except RouterError as exc:
        print(f"router: {exc.code}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (router report | head): not a failure
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print("router: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file the command was given cannot be read or written
        print(f"router: os_error: {exc}", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
