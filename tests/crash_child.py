"""A 30-step run in a child process that the kill test SIGKILLs at chosen points.

After every marker it prints, the child waits for the parent's "go" on stdin, so the
parent decides exactly where the kill lands: after a commit, before a model call, inside
a side-effecting tool before or after its effect.

usage: crash_child.py LOG LEDGER RUN_ID
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Sequence

import anyio
from kill_support import Observed, marker

from router import (
    Engine,
    Limits,
    Message,
    ModelTurn,
    Principal,
    ProposedCall,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
)
from router.core.protocols import Store
from router.core.tools import tool

STEPS = 30


def script(messages: Sequence[Message]) -> ModelTurn:
    step = sum(m.role == "assistant" for m in messages) + 1
    marker(f"model {step}")
    usage = Usage(input_tokens=100 + step, output_tokens=10)
    if step > STEPS:
        return ModelTurn(text=f"done after {STEPS} steps", usage=usage)
    if step % 3 == 0:
        calls: tuple[ProposedCall, ...] = (
            ProposedCall(f"t{step}", "transfer", f'{{"n": {step}}}'),
        )
    elif step % 3 == 1:
        calls = (ProposedCall(f"r{step}", "read_value", f'{{"n": {step}}}'),)
    else:
        calls = tuple(
            ProposedCall(f"r{step}.{i}", "read_value", f'{{"n": {step * 10 + i}}}')
            for i in range(2)
        )
    return ModelTurn(tool_calls=calls, usage=usage)


async def main(log: str, ledger: str, run_id: str) -> None:
    @tool(idempotent=True, inline=True)
    def read_value(n: int) -> int:
        marker(f"read {n}")
        return n * n

    @tool(inline=True)
    def transfer(n: int) -> str:
        marker(f"transfer-begin {n}")
        with sqlite3.connect(ledger) as db:
            db.execute("CREATE TABLE IF NOT EXISTS effects (n INTEGER)")
            db.execute("INSERT INTO effects (n) VALUES (?)", (n,))
        db.close()
        marker(f"transfer-done {n}")
        return f"moved {n}"

    async with SqliteStore.open(log) as sqlite_store:
        store: Store = Observed(sqlite_store)  # type: ignore[assignment]
        engine = Engine(
            Runtime(store, owner="kill-test"), ScriptedModel(script), Tools([read_value, transfer])
        )
        if await sqlite_store.read(run_id):
            result = await engine.resume(run_id)
        else:
            result = await engine.start(
                "move the money",
                principal=Principal(id="ops"),
                run_id=run_id,
                limits=Limits(max_steps=40),
            )
    print(f"result {result.phase}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
