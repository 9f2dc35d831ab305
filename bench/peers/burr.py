"""The Apache Burr peer: an application of a "model" action, a "tool" action and a terminal
"respond" action, with conditional transitions.

Stores: "memory" (no persister: the state lives in the Application) and "sqlite" (Burr's
SQLitePersister, which saves the whole state after every action and commits each save,
on a connection opened here with PRAGMA journal_mode=WAL).

Burr is imported only when a graph is built, so this module imports without it (then
``PEERS`` is empty).
"""

from __future__ import annotations

import importlib.metadata
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import WARMUP_RUNS, Backend, Peer, Samples, add, expected_results, fake_turn

if TYPE_CHECKING:
    from burr.core import Application, ApplicationBuilder, State
    from burr.core.graph import Graph
    from burr.core.persistence import SQLitePersister

__all__ = ["PEERS", "BurrPeer"]


def _version() -> str | None:
    for dist in ("apache-burr", "burr"):  # the project moved to "apache-burr"; "burr" is a shim
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


@contextmanager
def _open_store(store: str, tmp: Path, stem: str) -> Iterator[Backend]:
    if store == "memory":
        yield Backend(None)
    elif store == "sqlite":
        from burr.core.persistence import SQLLitePersister

        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / f"{stem}-{uuid.uuid4().hex[:8]}.sqlite"
        # The persister closes the connection when it is garbage-collected, which may happen
        # on another thread: allow that.
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            persister = SQLLitePersister(db_path=str(path), connection=conn)
            persister.initialize()  # creates the table
            yield Backend(persister, conn, path)
        finally:
            conn.close()
    else:
        raise ValueError(f"unknown store {store!r}")


def _graph(steps: int, calls: int, marks: list[int]) -> Graph:
    """The workload as a Burr graph; the model action appends ``perf_counter_ns()`` to ``marks``."""
    from burr.core import action, default, when
    from burr.core.graph import GraphBuilder

    @action(reads=["turn"], writes=["turn", "calls", "answer"])
    def model(state: State[Any]) -> State[Any]:
        marks.append(time.perf_counter_ns())
        turn = state["turn"]
        answer = fake_turn(turn, steps, calls)
        if isinstance(answer, str):
            return state.update(turn=turn + 1, calls=[], answer=answer)
        return state.update(turn=turn + 1, calls=answer)

    @action(reads=["calls"], writes=["results"])
    def tool(state: State[Any]) -> State[Any]:
        # The proposed calls run one after another inside this action (no parallelism).
        return state.extend(results=[add(**call["args"]) for call in state["calls"]])

    @action(reads=["answer"], writes=[])
    def respond(state: State[Any]) -> State[Any]:
        return state

    return (
        GraphBuilder()
        .with_actions(model=model, tool=tool, respond=respond)
        .with_transitions(
            ("model", "tool", when(calls__ne=[])),
            ("model", "respond", default),
            ("tool", "model", default),
        )
        .build()
    )


class BurrPeer:
    """Burr: the graph is built once per measurement; each run is a new Application
    (fresh app_id and state) built outside the timed region, then ``app.run``."""

    system = "burr"

    def __init__(self, version: str) -> None:
        self.version = version
        self.stores: tuple[str, ...] = ("memory", "sqlite")
        self.last_bytes_per_step: float | None = None

    def _app(self, graph: Graph, persister: SQLitePersister | None) -> Application[Any]:
        from burr.core import ApplicationBuilder

        builder: ApplicationBuilder[Any] = (
            ApplicationBuilder()
            .with_graph(graph)
            .with_state(turn=0, calls=[], results=[], answer=None)
            .with_entrypoint("model")
            .with_identifiers(app_id=uuid.uuid4().hex)
        )
        if persister is not None:
            builder = builder.with_state_persister(persister)
        return builder.build()

    @staticmethod
    def _run(app: Application[Any]) -> State[Any]:
        _, _, state = app.run(halt_after=["respond"])
        return state

    def _check(self, state: State[Any], marks: list[int], steps: int, calls: int) -> None:
        assert len(marks) == steps + 1, (self.system, len(marks), steps)
        assert state["answer"] == "done", state["answer"]
        results = list(state["results"])
        assert results == expected_results(steps, calls), (self.system, len(results), steps * calls)

    def react_loop(self, store: str, *, steps: int, runs: int, tmp: Path) -> Samples:
        return self._samples(store, steps=steps, calls=1, runs=runs, tmp=tmp)

    def parallel_tools(
        self, store: str, *, calls: int, turns: int, runs: int, tmp: Path
    ) -> Samples:
        return self._samples(store, steps=turns, calls=calls, runs=runs, tmp=tmp)

    def _samples(self, store: str, *, steps: int, calls: int, runs: int, tmp: Path) -> Samples:
        marks: list[int] = []
        graph = _graph(steps, calls, marks)
        with _open_store(store, tmp, self.system) as backend:
            for i in range(WARMUP_RUNS):
                state = self._run(self._app(graph, backend.saver))
                if i == 0:
                    self._check(state, marks, steps, calls)
                marks.clear()
            app = self._app(graph, backend.saver)
            commits = backend.count_commits(lambda: self._run(app)) / (steps + 1)
            per_step: list[float] = []
            for _ in range(runs):
                marks.clear()
                app = self._app(graph, backend.saver)
                begin = time.perf_counter_ns()
                app.run(halt_after=["respond"])
                per_step.append((time.perf_counter_ns() - begin) / 1000 / (steps + 1))
        return Samples(per_step_us=per_step, commits_per_step=commits, bytes_per_step=None)

    def long_run(self, store: str, *, steps: int, tmp: Path) -> list[float]:
        self.react_loop(store, steps=2, runs=1, tmp=tmp)  # warm the code paths, on another file
        marks: list[int] = []
        graph = _graph(steps, 1, marks)
        with _open_store(store, tmp, f"{self.system}-long") as backend:
            state = self._run(self._app(graph, backend.saver))
            self._check(state, marks, steps, 1)
            self.last_bytes_per_step = (
                backend.file_bytes() / steps if backend.path is not None else None
            )
        return [(b - a) / 1000 for a, b in zip(marks, marks[1:], strict=False)]


def _peers() -> list[BurrPeer]:
    version = _version()
    return [BurrPeer(version)] if version is not None else []


PEERS: list[Peer] = list(_peers())
