"""LangGraph peers: a plain StateGraph, and the idiomatic MessagesState + ToolNode graph.

Stores: "none" (no checkpointer), "memory" (InMemorySaver), "sqlite" (SqliteSaver on a
file, which sets WAL itself) and "postgres" (PostgresSaver on a database of the bench's
PostgreSQL server, bench/postgres.py). Graphs run with LangGraph's default durability ("async":
a superstep's checkpoint is written on a background thread while the next superstep runs;
``invoke`` returns only after every write has finished, so the timings include them).

LangGraph is imported only when a graph is built, so this module imports without it
(then ``PEERS`` is empty).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import operator
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, TypedDict

from . import WARMUP_RUNS, Backend, Peer, Samples, add, expected_results, fake_turn

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph

__all__ = ["PEERS", "Concurrent", "PlainGraphPeer", "ToolNodePeer"]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextmanager
def _open_store(store: str, tmp: Path, stem: str) -> Iterator[Backend]:
    if store == "none":
        yield Backend(None)
    elif store == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        yield Backend(InMemorySaver())
    elif store == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / f"{stem}-{uuid.uuid4().hex[:8]}.sqlite"
        # check_same_thread=False as LangGraph documents: with "async" durability the saver
        # writes from a background thread, and serialises access with its own lock.
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()  # creates the tables and runs PRAGMA journal_mode=WAL
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            yield Backend(saver, conn, path)
        finally:
            conn.close()
    elif store == "postgres":
        from langgraph.checkpoint.postgres import PostgresSaver

        from ..postgres import shared

        server = shared()
        assert server is not None, "no PostgreSQL server for the bench"
        # LangGraph's documented set-up: one autocommit connection, the tables made by setup().
        with PostgresSaver.from_conn_string(server.new_database(stem.replace("-", "_"))) as saver:
            saver.setup()
            yield Backend(saver, xids=server.next_xid)
    else:
        raise ValueError(f"unknown store {store!r}")


class _GraphPeer:
    """What both LangGraph peers share: the store set-up, the timing and the checks.

    A subclass builds the graph (``_compile``), its input (``_input``) and reads the tool
    results back out of the final state (``_results``).
    """

    system = ""

    def __init__(self, version: str, stores: tuple[str, ...]) -> None:
        self.version = version
        self.stores = stores
        self.last_bytes_per_step: float | None = None

    def _compile(
        self,
        *,
        steps: int,
        calls: int,
        marks: list[int],
        checkpointer: BaseCheckpointSaver[Any] | None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The graph for the workload; its model node appends ``perf_counter_ns()`` to ``marks``."""
        raise NotImplementedError

    def _input(self) -> dict[str, Any]:
        raise NotImplementedError

    def _results(self, final: dict[str, Any]) -> list[int]:
        raise NotImplementedError

    def _args(self, steps: int) -> tuple[dict[str, Any], RunnableConfig]:
        """Input and config for one run: a fresh thread, and room for 2 supersteps per turn."""
        config: RunnableConfig = {
            "configurable": {"thread_id": uuid.uuid4().hex},
            "recursion_limit": max(10_000, 2 * steps + 10),
        }
        return self._input(), config

    def _check(self, final: dict[str, Any], marks: list[int], steps: int, calls: int) -> None:
        assert len(marks) == steps + 1, (self.system, len(marks), steps)
        results = self._results(final)
        assert results == expected_results(steps, calls), (self.system, len(results), steps * calls)

    def react_loop(self, store: str, *, steps: int, runs: int, tmp: Path) -> Samples:
        return self._samples(store, steps=steps, calls=1, runs=runs, tmp=tmp)

    def parallel_tools(
        self, store: str, *, calls: int, turns: int, runs: int, tmp: Path
    ) -> Samples:
        return self._samples(store, steps=turns, calls=calls, runs=runs, tmp=tmp)

    def _samples(self, store: str, *, steps: int, calls: int, runs: int, tmp: Path) -> Samples:
        marks: list[int] = []
        with _open_store(store, tmp, self.system) as backend:
            graph = self._compile(steps=steps, calls=calls, marks=marks, checkpointer=backend.saver)
            for i in range(WARMUP_RUNS):
                final = graph.invoke(*self._args(steps))
                if i == 0:
                    self._check(final, marks, steps, calls)
                marks.clear()
            commits = backend.count_commits(lambda: graph.invoke(*self._args(steps))) / (steps + 1)
            per_step: list[float] = []
            for _ in range(runs):
                marks.clear()
                state, config = self._args(steps)
                begin = time.perf_counter_ns()
                graph.invoke(state, config)
                per_step.append((time.perf_counter_ns() - begin) / 1000 / (steps + 1))
        return Samples(per_step_us=per_step, commits_per_step=commits, bytes_per_step=None)

    def long_run(self, store: str, *, steps: int, tmp: Path) -> list[float]:
        """Intervals between model-node entries. The run uses durability="sync", so each
        step's checkpoint is written before the next step starts, as router's commit store
        does (with the default "async" the writes queue behind the run and these intervals
        would leave them out)."""
        self.react_loop(store, steps=2, runs=1, tmp=tmp)  # warm the code paths, on another file
        marks: list[int] = []
        with _open_store(store, tmp, f"{self.system}-long") as backend:
            graph = self._compile(steps=steps, calls=1, marks=marks, checkpointer=backend.saver)
            state, config = self._args(steps)
            if backend.path is not None:
                final = graph.invoke(state, config, durability="sync")
            else:  # nothing to write; LangGraph 1.2 fails on durability="sync" without a saver
                final = graph.invoke(state, config)
            self._check(final, marks, steps, 1)
            self.last_bytes_per_step = (
                backend.file_bytes() / steps if backend.path is not None else None
            )
        return [(b - a) / 1000 for a, b in zip(marks, marks[1:], strict=False)]


class PlainState(TypedDict, total=False):
    turn: int  # model turns taken so far
    calls: list[dict[str, Any]]  # the calls the model proposed on its last turn
    results: Annotated[list[int], operator.add]  # every add result, appended by the tools node
    answer: str  # the model's final text


class FanoutState(TypedDict, total=False):
    results: Annotated[list[int], operator.add]  # each branch appends its index
    total: int  # the join's sum of results


class Concurrent(NamedTuple):
    """What a concurrent_runs measurement gives: each step's latency as its run sees it
    (microseconds), steps per second over the whole set, write transactions per step."""

    latencies_us: list[float]
    steps_per_s: float
    commits_per_step: float


def _model_turn(state: PlainState, steps: int, calls: int) -> PlainState:
    turn = state["turn"]
    answer = fake_turn(turn, steps, calls)
    if isinstance(answer, str):
        return {"turn": turn + 1, "calls": [], "answer": answer}
    return {"turn": turn + 1, "calls": answer}


def _tools(state: PlainState) -> PlainState:
    # The proposed calls run one after another inside this node (no parallelism).
    return {"results": [add(**call["args"]) for call in state["calls"]]}


def _plain_graph(
    model: Any, tools: Any, checkpointer: BaseCheckpointSaver[Any] | None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """model -> (tools -> model)* -> END, with the given node functions (sync or async)."""
    from langgraph.graph import END, START, StateGraph

    def route(state: PlainState) -> str:
        return "tools" if state["calls"] else END

    builder = StateGraph(PlainState)
    builder.add_node("model", model)
    builder.add_node("tools", tools)
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", route, ["tools", END])
    builder.add_edge("tools", "model")
    return builder.compile(checkpointer=checkpointer)


class PlainGraphPeer(_GraphPeer):
    """A hand-written StateGraph: model -> (tools -> model)* -> END over a TypedDict state."""

    system = "langgraph-plain"

    def fanout(self, store: str, *, branches: int, runs: int, tmp: Path) -> Samples:
        """``runs`` runs of start -> ``branches`` parallel branches (one superstep) -> join -> END.
        A step is one node execution, so a run has ``branches + 2`` steps."""
        from langgraph.graph import END, START, StateGraph

        def start(state: FanoutState) -> FanoutState:
            return {}

        def branch(i: int) -> Any:
            def run(state: FanoutState) -> FanoutState:
                return {"results": [i]}

            return run

        def join(state: FanoutState) -> FanoutState:
            return {"total": sum(state["results"])}

        def args() -> tuple[FanoutState, RunnableConfig]:
            return {"results": []}, {"configurable": {"thread_id": uuid.uuid4().hex}}

        steps = branches + 2
        with _open_store(store, tmp, f"{self.system}-fanout") as backend:
            builder = StateGraph(FanoutState)
            builder.add_node("start", start)
            builder.add_node("join", join)
            builder.add_edge(START, "start")
            for i in range(branches):
                builder.add_node(f"b{i}", branch(i))
                builder.add_edge("start", f"b{i}")
                builder.add_edge(f"b{i}", "join")
            builder.add_edge("join", END)
            graph = builder.compile(checkpointer=backend.saver)
            for i in range(WARMUP_RUNS):
                final = graph.invoke(*args())
                if i == 0:
                    assert sorted(final["results"]) == list(range(branches)), (self.system, final)
                    assert final["total"] == sum(range(branches)), (self.system, final)
            commits = backend.count_commits(lambda: graph.invoke(*args())) / steps
            per_step: list[float] = []
            for _ in range(runs):
                state, config = args()
                begin = time.perf_counter_ns()
                graph.invoke(state, config)
                per_step.append((time.perf_counter_ns() - begin) / 1000 / steps)
        return Samples(per_step_us=per_step, commits_per_step=commits, bytes_per_step=None)

    def supervisor(self, store: str, *, workers: int, runs: int, tmp: Path) -> Samples:
        """``runs`` runs of a supervisor node that routes, on its turns, to worker node i (a
        conditional edge on ``next``); each worker node invokes its own one-node compiled
        subgraph (the worker agent) and hands back its result; after the last worker the
        supervisor answers "done". A step is one agent turn: ``workers + 1`` supervisor turns
        and one per worker. The subgraphs are compiled without a checkpointer, so they use
        the parent's (LangGraph's default for a subgraph invoked from a node)."""
        from langgraph.graph import END, START, StateGraph

        class SupervisorState(TypedDict, total=False):
            turn: int  # supervisor turns taken so far
            next: str  # the node the supervisor routes to: a worker, or END
            results: Annotated[list[str], operator.add]  # each worker's answer, appended
            answer: str  # the supervisor's final text

        class WorkerState(TypedDict, total=False):
            task: str
            answer: str

        def supervisor(state: Any) -> Any:
            turn = state["turn"]
            if turn < workers:
                return {"turn": turn + 1, "next": f"w{turn}"}
            return {"turn": turn + 1, "next": END, "answer": "done"}

        def route(state: Any) -> str:
            return str(state["next"])

        def worker_graph(i: int) -> Any:
            def agent(state: Any) -> Any:
                return {"answer": f"result {i}"}

            sub = StateGraph(WorkerState)
            sub.add_node("agent", agent)
            sub.add_edge(START, "agent")
            sub.add_edge("agent", END)
            return sub.compile()

        def worker(i: int) -> Any:
            graph = worker_graph(i)

            def run(state: Any) -> Any:
                out = graph.invoke({"task": f"task {i}"})
                return {"results": [out["answer"]]}

            return run

        def args() -> tuple[Any, RunnableConfig]:
            return {"turn": 0, "results": []}, {"configurable": {"thread_id": uuid.uuid4().hex}}

        steps = 2 * workers + 1
        names = [f"w{i}" for i in range(workers)]
        with _open_store(store, tmp, f"{self.system}-supervisor") as backend:
            builder = StateGraph(SupervisorState)
            builder.add_node("supervisor", supervisor)
            builder.add_edge(START, "supervisor")
            for i, name in enumerate(names):
                builder.add_node(name, worker(i))
                builder.add_edge(name, "supervisor")
            builder.add_conditional_edges("supervisor", route, [*names, END])
            graph = builder.compile(checkpointer=backend.saver)
            for i in range(WARMUP_RUNS):
                final = graph.invoke(*args())
                if i == 0:
                    assert final["answer"] == "done" and final["turn"] == workers + 1, (
                        self.system,
                        final,
                    )
                    assert final["results"] == [f"result {w}" for w in range(workers)], (
                        self.system,
                        final,
                    )
            commits = backend.count_commits(lambda: graph.invoke(*args())) / steps
            per_step: list[float] = []
            for _ in range(runs):
                state, config = args()
                begin = time.perf_counter_ns()
                graph.invoke(state, config)
                per_step.append((time.perf_counter_ns() - begin) / 1000 / steps)
        return Samples(per_step_us=per_step, commits_per_step=commits, bytes_per_step=None)

    def _compile(
        self,
        *,
        steps: int,
        calls: int,
        marks: list[int],
        checkpointer: BaseCheckpointSaver[Any] | None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        def model(state: PlainState) -> PlainState:
            marks.append(time.perf_counter_ns())
            return _model_turn(state, steps, calls)

        return _plain_graph(model, _tools, checkpointer)

    async def concurrent_runs(self, store: str, *, runs: int, steps: int) -> Concurrent:
        """``runs`` runs in flight at once on the event loop (``ainvoke`` with async nodes, as
        a service runs them) on AsyncPostgresSaver over a pool of 10 connections, router's
        default pool size (LangGraph's documented production set-up)."""
        import anyio
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        from ..postgres import shared

        server = shared()
        assert store == "postgres" and server is not None, store
        marks: dict[str, list[int]] = {}

        async def model(state: PlainState, config: RunnableConfig) -> PlainState:
            thread = config["configurable"]["thread_id"]
            marks.setdefault(thread, []).append(time.perf_counter_ns())
            return _model_turn(state, steps, 1)

        async def tools(state: PlainState) -> PlainState:
            return _tools(state)

        options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        dsn = server.new_database("langgraph_concurrent")
        async with AsyncConnectionPool(dsn, max_size=10, kwargs=options, open=False) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            graph = _plain_graph(model, tools, saver)
            final = await graph.ainvoke(*self._args(steps))
            assert self._results(final) == expected_results(steps, 1), final
            marks.clear()
            before = server.next_xid()
            begin = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(runs):
                    tg.start_soon(graph.ainvoke, *self._args(steps))
            elapsed = time.perf_counter() - begin
            commits = server.next_xid() - before
        assert len(marks) == runs and all(len(m) == steps + 1 for m in marks.values())
        latencies = [(b - a) / 1000 for m in marks.values() for a, b in itertools.pairwise(m)]
        return Concurrent(latencies, runs * (steps + 1) / elapsed, commits / (runs * (steps + 1)))

    def _input(self) -> dict[str, Any]:
        return {"turn": 0, "calls": [], "results": []}

    def _results(self, final: dict[str, Any]) -> list[int]:
        assert final["answer"] == "done", final.get("answer")
        return list(final["results"])


class ToolNodePeer(_GraphPeer):
    """The idiomatic agent graph: MessagesState, a fake chat model node, ToolNode, tools_condition.

    The fake model reads its turn off the transcript's length (one human message, then per
    turn one AI message and ``calls`` tool messages), so the state is plain MessagesState.
    ToolNode runs a turn's calls in parallel on its thread pool.
    """

    system = "langgraph-toolnode"

    def _compile(
        self,
        *,
        steps: int,
        calls: int,
        marks: list[int],
        checkpointer: BaseCheckpointSaver[Any] | None,
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        from langchain_core.messages import AIMessage
        from langchain_core.tools import tool
        from langgraph.graph import START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode, tools_condition

        @tool("add")
        def add_tool(a: int, b: int) -> int:
            """Add two integers."""
            return add(a, b)

        def model(state: MessagesState) -> dict[str, Any]:
            marks.append(time.perf_counter_ns())
            turn = (len(state["messages"]) - 1) // (calls + 1)
            answer = fake_turn(turn, steps, calls)
            if isinstance(answer, str):
                return {"messages": [AIMessage(content=answer)]}
            return {"messages": [AIMessage(content="", tool_calls=answer)]}

        builder = StateGraph(MessagesState)
        builder.add_node("model", model)
        builder.add_node("tools", ToolNode([add_tool]))
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", tools_condition)
        builder.add_edge("tools", "model")
        return builder.compile(checkpointer=checkpointer)

    def _input(self) -> dict[str, Any]:
        from langchain_core.messages import HumanMessage

        return {"messages": [HumanMessage(content="add them")]}

    def _results(self, final: dict[str, Any]) -> list[int]:
        from langchain_core.messages import ToolMessage

        messages = final["messages"]
        assert messages[-1].content == "done", messages[-1]
        return [int(str(m.content)) for m in messages if isinstance(m, ToolMessage)]


def _peers() -> list[_GraphPeer]:
    version = _version("langgraph")
    if version is None:
        return []
    stores = ("none", "memory")
    stores += ("sqlite",) * (_version("langgraph-checkpoint-sqlite") is not None)
    stores += ("postgres",) * (_version("langgraph-checkpoint-postgres") is not None)
    return [PlainGraphPeer(version, stores), ToolNodePeer(version, stores)]


PEERS: list[Peer] = list(_peers())
