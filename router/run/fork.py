"""Forking a stored run, agent or graph: a new run that shares the parent's history up to
a point and goes on from there (time travel). Written through the one log writer."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.events import Event, GraphStarted, RunForked
from ..core.fsm import RunState, fold
from ..core.graph_fsm import GraphState, fold_graph
from ..core.protocols import Store
from ..errors import ConfigError
from .log import RunLog, open_log
from .runtime import Runtime

__all__ = ["fork_run"]


async def fork_run(
    store_or_runtime: Store | Runtime,
    run_id: str,
    at_seq: int,
    *,
    new_run_id: str | None = None,
    then: Sequence[Event] = (),
    note: str = "",
) -> RunState | GraphState:
    """Fork a run at ``at_seq`` into a new run: the parent's events 0 .. at_seq - 1, then a
    ``run_forked`` event naming the parent and the fork point, then ``then`` (for example a
    reviewer's edit of the model turn that was at ``at_seq``). Returns the fork's state (a
    RunState, or a GraphState for a graph run, whose values are merged by replacement: the
    graph's reducers are not known here); ``Engine.resume`` or ``GraphEngine.resume``
    continues it, from the middle of a step if the fork point is there. The parent is not
    touched. The fork is sealed with the parent's recorded redaction, ``then`` included; its
    id comes from the runtime's ids unless given.

    Raises ConfigError if the fork point is outside the run or ``then`` does not fit there.
    """
    runtime = Runtime.of(store_or_runtime)
    events, parent = await open_log(runtime, run_id, lease=False)
    if not 1 <= at_seq <= len(events):
        raise ConfigError(
            f"run {run_id!r} has events 0..{len(events) - 1}; fork at 1..{len(events)}"
        )
    stored = await runtime.store.read(run_id, after=at_seq - 2)
    new_run_id = new_run_id or runtime.ids.new_id("run")
    if await runtime.store.read(new_run_id):
        raise ConfigError(f"run {new_run_id!r} already exists")
    forked = RunForked(
        at=runtime.clock.now_us(),
        parent_run_id=run_id,
        parent_seq=at_seq,
        parent_hash=stored[0].hash.hex(),
        note=note,
    )
    batch = [*events[:at_seq], forked, *then]
    state: RunState | GraphState = (
        fold_graph(None, batch) if isinstance(events[0], GraphStarted) else fold(batch)
    )
    if state.fault:
        raise ConfigError(f"the fork does not fit at seq {at_seq}: {state.fault}")
    log = RunLog(runtime, new_run_id, parent.redaction)
    for event in batch:
        log.add(event)
    await log.close(state)
    return state
