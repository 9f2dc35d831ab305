"""Cancelling runs at many points, on every store and durability setting: the caller sees
only the cancellation, and every run's log ends in a terminal event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from router import (
    Engine,
    ManualClock,
    MemoryStore,
    Message,
    Principal,
    Runtime,
    ScriptedModel,
    SequentialIds,
    SqliteStore,
    StoreError,
    Tools,
    load_run,
    tool,
)
from router.core.events import Event, RunCancelled
from router.core.protocols import ModelTurn, Store
from router.core.stored import decode_run
from router.models.scripted import call, say
from router.store.testing import sealed_run

pytestmark = pytest.mark.anyio
USER = Principal(id="u", roles=frozenset({"ops"}))
RUNS = 50
STEPS = 6  # tool calls a run makes before it answers


@pytest.fixture(params=["memory", "commit", "group", "fsync", "group_fsync"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    async with SqliteStore.open(tmp_path / "log.db", request.param) as sqlite_store:
        yield sqlite_store


class Canceller:
    """Counts ticks and cancels run i's scope once the count reaches its trigger.

    A tick is either an event of some run ("events": a model call, a tool call, a committed
    batch), so that each run is cancelled wherever the others happen to be (a batch queued
    for a group commit, or in one); or a turn of the event loop ("turns", counted by a
    task of its own), which goes on while a commit runs on a worker thread."""

    def __init__(self, triggers: Sequence[int], counts: str) -> None:
        self.scopes = [anyio.CancelScope() for _ in triggers]
        self.triggers = list(triggers)
        self.counts = counts
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        for scope, trigger in zip(self.scopes, self.triggers, strict=True):
            if trigger == self.ticks:
                scope.cancel()

    def event(self) -> None:
        if self.counts == "events":
            self.tick()

    def committed(self, run_id: str, events: Sequence[Event]) -> None:  # an Observer
        self.event()

    async def count_turns(self, until: anyio.Event) -> None:
        while not until.is_set():
            if self.counts == "turns":
                self.tick()
            await anyio.lowlevel.checkpoint()


def build_engine(store: Store, canceller: Canceller) -> Engine:
    @tool(idempotent=True, inline=True)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        canceller.event()
        return a + b

    @tool
    async def step(turns: int) -> int:
        """A side effect (the run commits before it starts) that takes a few turns of the
        event loop: the other runs move meanwhile."""
        for _ in range(turns + 1):
            canceller.event()
            await anyio.lowlevel.checkpoint()
        return turns

    def script(messages: Sequence[Message]) -> ModelTurn:
        canceller.event()
        done = sum(1 for m in messages if m.role == "tool")
        if done == STEPS:
            return say("done")
        if done % 2 == 0:
            return call("add", f'{{"a": {done}, "b": 1}}')
        turns = int(messages[0].content) * done % 5  # varies across runs and steps
        return call("step", f'{{"turns": {turns}}}')

    runtime = Runtime(
        store,
        clock=ManualClock(1_000_000, 10),
        ids=SequentialIds(),
        owner="test",
        observers=[canceller],
    )
    return Engine(runtime, ScriptedModel(script), Tools([add, step]))


@pytest.mark.parametrize(
    ("counts", "stride"),
    [("events", 1), ("events", 7), ("events", 16), ("turns", 3), ("turns", 30), ("turns", 100)],
)
async def test_cancelled_runs_raise_only_the_cancellation_and_end_their_logs(
    store: Store, counts: str, stride: int
) -> None:
    # Run i is cancelled at tick 1 + stride * i: early in every run (a small stride), or
    # spread over the runs' lives, some of which end before their tick comes.
    canceller = Canceller([1 + stride * i for i in range(RUNS)], counts)
    engine = build_engine(store, canceller)
    errors: list[tuple[int, Exception]] = []

    async def drive(i: int) -> None:
        with canceller.scopes[i]:
            try:
                await engine.start(str(i), principal=USER)
            except Exception as exc:  # anything but the cancellation is a failure
                errors.append((i, exc))

    ended = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller.count_turns, ended)
        async with anyio.create_task_group() as runs:
            for i in range(RUNS):
                runs.start_soon(drive, i)
        ended.set()
    assert errors == []
    summaries = await store.runs()
    assert len(summaries) == RUNS
    for summary in summaries:
        _, state, _ = await load_run(store, summary.run_id)
        assert state.terminal, (summary.run_id, summary.last_kind, state.phase)
    assert any(summary.last_kind == "run_cancelled" for summary in summaries)


async def test_a_group_commit_that_fails_reaches_each_of_its_batches_even_a_cancelled_one(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "log.db", "group")
    await store.aclose()  # every commit now fails
    outcomes: dict[str, BaseException] = {}
    follower = anyio.CancelScope()

    async def append(run_id: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await store.append(sealed_run(run_id, 1))
            except StoreError as exc:
                outcomes[run_id] = exc

    async def cancel_follower() -> None:
        follower.cancel()

    # In the order started: "a" leads a group and lets the loop turn, "b" joins it, and is
    # cancelled before "a" takes the group to commit it. "b" then waits, shielded, for the
    # outcome of that commit: were it never told, this test would hang.
    async with anyio.create_task_group() as tg:
        tg.start_soon(append, "a", anyio.CancelScope())
        tg.start_soon(append, "b", follower)
        tg.start_soon(cancel_follower)
    assert sorted(outcomes) == ["a", "b"]
    assert "the store is closed" in str(outcomes["b"])


async def test_a_cancelled_run_names_the_calls_whose_outcome_it_cannot_know(
    store: Store,
) -> None:
    import threading

    started, release = threading.Event(), threading.Event()

    @tool  # not idempotent, in a worker thread: a cancellation cannot stop it
    def transfer(cents: int) -> str:
        """Move money."""
        started.set()
        release.wait(5)
        return "moved"

    engine = Engine(
        store, ScriptedModel([call("transfer", '{"cents": 5}'), say("ok")]), Tools([transfer])
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: engine.start("go", principal=USER, run_id="r"))
        await anyio.to_thread.run_sync(started.wait, 5)
        tg.cancel_scope.cancel()
    release.set()
    events = decode_run(await store.read("r"))
    assert isinstance(events[-1], RunCancelled) and events[-1].unsure == ("call_1_0",)
