"""Replay re-decides every run identically; a changed definition is refused on resume and
named by replay."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from router import (
    DefinitionChanged,
    Engine,
    Limits,
    ManualClock,
    MemoryStore,
    Message,
    ModelTurn,
    Phase,
    Price,
    PriceTable,
    Principal,
    ProposedCall,
    Runtime,
    ScriptedModel,
    SequentialIds,
    SqliteStore,
    Tools,
    Usage,
    load_run,
    resolve_call,
    tool,
)
from router.core.protocols import Store
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
USER = Principal(id="u", roles=frozenset({"ops"}))
PRICES = PriceTable({"scripted": Price(3.0, 15.0)})


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    return a + b


@tool(permissions={"admin"})
def wipe() -> str:
    return "wiped"


class Crash(BaseException):
    pass


def engine(store: Store, script: Any, *tools: Any, prices: PriceTable = PRICES) -> Engine:
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    return Engine(
        Runtime(store, clock=ManualClock(0, 5), ids=SequentialIds(), owner="t"),
        model,
        Tools(tools or (add, wipe)),
        prices=prices,
    )


U = Usage(input_tokens=100, output_tokens=10)


async def scenarios(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    """Runs that exercise every kind of event: (run id, the tools it ran with)."""
    ids: list[tuple[str, tuple[Any, ...]]] = []
    scripts: list[tuple[list[ModelTurn], Limits]] = [
        (
            [
                call("add", '{"a": 1, "b": 2}', usage=U),
                call("add", '{"a": "x"}'),
                call("wipe", "{}"),
                call("nope", "{}"),
                say("done", usage=U),
            ],
            Limits(),
        ),
        (
            [
                ModelTurn(
                    tool_calls=(
                        ProposedCall("p", "add", '{"a": 1, "b": 1}'),
                        ProposedCall("q", "wipe", "{}"),
                    )
                ),
                say("ok"),
            ],
            Limits(),
        ),
        ([call("add", '{"a": 1, "b": 1}')] * 5, Limits(max_repeats=3)),
        (
            [call("add", f'{{"a": {i}, "b": 1}}', usage=U) for i in range(9)],
            Limits(max_total_tokens=500),
        ),
        ([call("add", f'{{"a": {i}, "b": 1}}') for i in range(9)], Limits(max_steps=3)),
    ]
    for n, (script, limits) in enumerate(scripts):
        result = await engine(store, script).start(
            "go", principal=USER, limits=limits, run_id=f"s{n}"
        )
        ids.append((result.run_id, (add, wipe)))

    ran: list[int] = []

    @tool
    async def pay(cents: int) -> str:
        ran.append(cents)
        if len(ran) == 1:
            raise Crash  # after the effect, before its result is recorded
        return "paid"

    for decision, run_id in (
        ("supply", "pay-supply"),
        ("retry", "pay-retry"),
        ("fail", "pay-fail"),
    ):
        script = [call("pay", '{"cents": 5}'), say("ok")]
        with pytest.raises(Crash):
            await engine(store, script, add, pay).start("go", principal=USER, run_id=run_id)
        await store.release_lease(run_id, "t")
        assert (await engine(store, script, add, pay).resume(run_id)).phase is Phase.INTERRUPTED
        await resolve_call(store, run_id, "call_1_0", decision, result="paid")  # type: ignore[arg-type]
        await engine(store, script, add, pay).resume(run_id)
        ids.append((run_id, (add, pay)))
        ran.clear()
    return ids


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "memory":
        yield MemoryStore()
    else:
        async with SqliteStore.open(tmp_path / "log.db") as sqlite_store:
            yield sqlite_store


async def test_every_run_replays_identically(store: Store) -> None:
    ids = await scenarios(store)
    kinds = set()
    for run_id, tools in ids:
        report = await engine(store, [], *tools).replay(run_id)
        assert report.identical, (run_id, report.divergence)
        events, _, _ = await load_run(store, run_id)
        kinds |= {type(e).__name__ for e in events}
    assert {
        "ToolCallRejected",
        "ToolCallDenied",
        "LimitExceeded",
        "RunInterrupted",
        "ToolCallResolved",
    } <= kinds


async def test_a_changed_schema_is_refused_on_resume_and_named_by_replay(store: Store) -> None:
    script = [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 3, "b": 4}'), say("7")]
    models = 0

    def crash_on_second(messages: Sequence[Message]) -> ModelTurn:
        nonlocal models
        models += 1
        if models == 2:
            raise Crash
        return script[0]

    with pytest.raises(Crash):
        await engine(store, ScriptedModel(crash_on_second), add).start(
            "go", principal=USER, run_id="r"
        )
    await store.release_lease("r", "t")

    @tool(inline=True, idempotent=True, name="add")
    def add_three(a: int, b: int, c: int) -> int:
        return a + b + c

    changed = engine(store, script, add_three)
    with pytest.raises(DefinitionChanged) as info:
        await changed.resume("r")
    assert info.value.run_id == "r"
    report = await changed.replay("r")
    assert report.divergence is not None
    assert report.divergence.seq == 2  # where the call was started, the new schema rejects it
    assert '"kind":"tool_started"' in report.divergence.expected
    assert '"kind":"tool_call_rejected"' in report.divergence.got and "`c`" in report.divergence.got

    result = await changed.resume("r", migration="add takes c")
    assert result.phase is Phase.DONE
    events, state, _ = await load_run(store, "r")
    migrated = [e for e in events if type(e).__name__ == "RunMigrated"]
    assert len(migrated) == 1 and migrated[0].migration == "add takes c"  # type: ignore[attr-defined]
    assert state.definition == changed.definition


async def test_a_changed_price_table_is_named_by_replay(store: Store) -> None:
    result = await engine(store, [call("add", '{"a": 1, "b": 2}', usage=U), say("3")]).start(
        "go", principal=USER
    )
    dearer = engine(store, [], prices=PriceTable({"scripted": Price(30.0, 15.0)}))
    report = await dearer.replay(result.run_id)
    assert report.divergence is not None and "cost_nusd" in report.divergence.got


def test_replay_from_the_cli_covers_the_demo(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = [sys.executable, "-m", "router"]
    subprocess.run([*run, "demo"], cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run([*run, "replay", "all"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "identical (17 events)" in out.stdout


async def test_a_fork_shares_the_prefix_records_its_parent_and_goes_its_own_way(
    store: Store,
) -> None:
    from router import ConfigError, fork_run, verify
    from router.core.events import ModelResponded, RunForked, ToolSucceeded

    script = [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 3, "b": 4}'), say("the sum is 7")]
    parent = await engine(store, script).start("go", principal=USER, run_id="p")
    events, _, _ = await load_run(store, "p")
    last_turn = max(i for i, e in enumerate(events) if isinstance(e, ModelResponded))

    # A reviewer edits the last model turn: the fork ends with the edited answer.
    edited = ModelResponded(at=events[last_turn].at, step=3, text="the sum is 10", model="scripted")
    state = await fork_run(
        store, "p", last_turn, new_run_id="edit", then=[edited], note="reviewer edit"
    )
    assert state.phase is Phase.DONE and state.output == "the sum is 10"

    # Fork before the second call and continue it with another model.
    second = next(i for i, e in enumerate(events) if isinstance(e, ModelResponded) and e.step == 2)
    await fork_run(store, "p", second, new_run_id="other")
    other = await engine(
        store, [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": 5, "b": 5}'), say("10")]
    ).resume("other")
    assert other.phase is Phase.DONE and other.output == "10" and parent.output == "the sum is 7"

    fork_events, _, _ = await load_run(store, "other")
    forked = [e for e in fork_events if isinstance(e, RunForked)]
    parent_stored = await store.read("p")
    assert (
        forked[0].parent_run_id == "p"
        and forked[0].parent_hash == parent_stored[second - 1].hash.hex()
    )
    assert fork_events[:second] == events[:second]
    assert verify(await store.read("other")) == len(fork_events)
    assert (await engine(store, []).replay("other")).identical

    with pytest.raises(ConfigError):
        await fork_run(store, "p", 0)
    with pytest.raises(ConfigError, match="does not fit"):
        await fork_run(
            store, "p", 1, then=[ToolSucceeded(at=1, call_id="nope", tool="add", result="1")]
        )
    assert await store.read("p-fork-1") == []
