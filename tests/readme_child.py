"""The README's agent (its "Embedding it" engine with its 30 s deadline, and a refund held
for a reviewer as in "Human review") as a service process that the test kills with SIGKILL.

Its clock reads the system time plus OFFSET_S, so that a later process stands for one
started that much later without the test waiting for it. The restarted service keeps its
name in leases, as a service restarted on the same host does, and so takes its run back.

usage: readme_child.py LOG LEDGER start|resume|approve OFFSET_S
"""

from __future__ import annotations

import sqlite3
import sys
import time

import anyio
from kill_support import Observed, marker

from router import (
    Engine,
    Limits,
    Principal,
    ReviewRules,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    Usage,
    review_run,
    tool,
)
from router.core.protocols import Store
from router.models.scripted import call, say

RUN = "readme-run"


class LaterClock:
    """The system clock, OFFSET_S seconds on."""

    def __init__(self, offset_s: float) -> None:
        self.offset_us = int(offset_s * 1e6)

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


def engine(store: Store, ledger: str, offset_s: float) -> Engine:
    @tool(idempotent=True, permissions={"crm:read"}, timeout_s=2.0)
    async def lookup_customer(customer_id: int) -> dict[str, object]:
        """Read one customer from the CRM."""
        marker(f"lookup {customer_id}")
        return {"id": customer_id, "plan": "enterprise"}

    @tool(permissions={"billing:write"})
    def issue_refund(customer_id: int, amount: int) -> str:
        """Refund a customer, in cents."""
        with sqlite3.connect(ledger) as db:
            db.execute("CREATE TABLE IF NOT EXISTS refunds (customer_id INTEGER, amount INTEGER)")
            db.execute("INSERT INTO refunds VALUES (?, ?)", (customer_id, amount))
        db.close()
        return f"refunded {amount}"

    spent = Usage(input_tokens=120, output_tokens=20)
    model = ScriptedModel(
        [
            call("lookup_customer", '{"customer_id": 42}', usage=spent),
            call("issue_refund", '{"customer_id": 42, "amount": 1200}', usage=spent),
            say("Customer 42 is on enterprise; the refund is issued.", usage=spent),
        ]
    )
    return Engine(
        Runtime(store, clock=LaterClock(offset_s), owner="readme-service"),
        model,
        Tools([lookup_customer, issue_refund]),
        limits=Limits(max_steps=10, max_total_tokens=50_000, deadline_s=30),
        review=ReviewRules(before_tools=frozenset({"issue_refund"})),
    )


async def main(log: str, ledger: str, step: str, offset: str) -> None:
    async with SqliteStore.open(log) as sqlite_store:
        store: Store = Observed(sqlite_store)  # type: ignore[assignment]
        agent = engine(store, ledger, float(offset))
        if step == "start":
            principal = Principal(id="svc-7", roles=frozenset({"crm:read", "billing:write"}))
            result = await agent.start(
                "Which plan is customer 42 on? Refund their last invoice.",
                principal=principal,
                run_id=RUN,
            )
        else:
            if step == "approve":
                await review_run(
                    agent.runtime, RUN, "approve", by="ann", edit={"amount": 900}, tools=agent.tools
                )
            result = await agent.resume(RUN)
    print(f"result {result.phase} {result.reason}", flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:5])
