"""The operator's commands: a worker that takes over dead replicas' runs, a backup of a
SQLite log, and a migration between stores."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio

from ..errors import ConfigError
from ..run.runtime import LEASE_TTL_S, Runtime
from ..run.worker import Worker
from ..store.copy import backup_sqlite, migrate
from ..store.open import is_postgres, open_store
from . import demo

__all__ = ["add_commands", "load_factory"]

_Adder = Callable[..., argparse.ArgumentParser]


def load_factory(option: str, spec: str) -> Callable[..., Any]:
    """The function an option names as MODULE:FUNCTION (an application's definitions)."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{option} {spec!r}: cannot load it: {exc}") from exc


def _definitions(spec: str, runtime: Runtime, db: str) -> Iterable[Any]:
    """The definitions named by --app MODULE:FUNCTION, called with the worker's runtime."""
    if spec == "demo":
        return [demo.demo_engine(runtime, demo.crm_path(db))]
    return list(load_factory("--app", spec)(runtime))


async def _worker(args: argparse.Namespace) -> int:
    async with open_store(args.db, create=False) as store:
        runtime = Runtime(store, lease_ttl_s=args.lease_ttl)
        worker = Worker(
            runtime,
            _definitions(args.app, runtime, args.db),
            concurrency=args.concurrency,
            poll_s=args.poll,
            grace_s=args.grace,
        )
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        worker.stop()
                        return

            tg.start_soon(on_signal)
            print(f"worker {runtime.owner} on {args.db}", file=sys.stderr, flush=True)
            await worker.serve(ready=lambda: print("ready", file=sys.stderr, flush=True))
            tg.cancel_scope.cancel()
    print(f"stopped: {worker.resumed} run(s) advanced, {worker.parked} parked", file=sys.stderr)
    return 0


async def _backup(args: argparse.Namespace) -> int:
    if is_postgres(args.db):
        raise ConfigError("back PostgreSQL up with pg_dump or its base backups (see the README)")
    done = await backup_sqlite(args.db, args.out)
    print(
        f"backed up {done.runs} run(s), {done.events} event(s) to {args.out}; every chain verifies"
    )
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    if not is_postgres(args.source) and not Path(args.source).exists():
        raise ConfigError(f"no log at {args.source}")
    terminal = sys.stderr.isatty() or args.progress

    def progress(done: int, total: int, copied: int) -> None:
        if terminal and (done == total or done % 100 == 0):
            end = "\n" if done == total else ("\r" if sys.stderr.isatty() else "\n")
            print(f"{done}/{total} runs, {copied} events copied", end=end, file=sys.stderr)
            sys.stderr.flush()

    async with (
        open_store(args.source, read_only=True) as source,
        open_store(args.target) as target,
    ):
        done = await migrate(source, target, progress=progress)
    print(
        f"migrated {done.runs} run(s), {done.events} event(s) ({done.copied} copied now); "
        "every chain verifies in the target"
    )
    return 0


def add_commands(sub: Any, add: _Adder) -> None:
    p = add(sub, "worker", _worker, "claim the runs whose owner died and advance them")
    p.add_argument(
        "--app",
        default="demo",
        metavar="MODULE:FUNCTION",
        help="a function that takes the worker's Runtime and returns its Engines and "
        "GraphEngines (default: the demo agent)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="runs advanced at once")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks for runs")
    p.add_argument("--lease-ttl", type=float, default=LEASE_TTL_S, help="lease time to live, s")
    p.add_argument("--grace", type=float, default=5.0, help="on shutdown, seconds to finish")
    p = add(sub, "backup", _backup, "copy a SQLite log online into a new file and verify it")
    p.add_argument("out", help="the new file")
    p = add(
        sub,
        "migrate",
        _migrate,
        "copy every run from one log to another (SQLite or PostgreSQL), verified; "
        "run it again to resume",
    )
    p.add_argument("source", help="a SQLite file or a postgresql:// URL")
    p.add_argument("target", help="a SQLite file or a postgresql:// URL")
    p.add_argument("--progress", action="store_true", help="a progress line even off a terminal")
