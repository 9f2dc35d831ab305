"""A refund graph for the graph-run tests, and engine factories for ``router replay --agent
graph_factory:refund_engine`` (or ``:extended_engine``, the graph with one more node)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from router import GraphEngine
from router.core.protocols import Store
from router.graph import END, CompiledGraph, Graph

REVIEW_BEFORE = frozenset({"pay"})


async def draft(state: dict[str, Any]) -> dict[str, Any]:
    return {"amount": state["asked"]}


async def pay(state: dict[str, Any]) -> dict[str, Any]:
    return {"paid": state["amount"]}


async def deny(state: dict[str, Any]) -> dict[str, Any]:
    return {"paid": 0}


async def notify(state: dict[str, Any]) -> dict[str, Any]:
    return {"notified": f"paid {state['paid']}"}


def decide(state: dict[str, Any]) -> str:
    return "pay" if state["amount"] <= 500 else "deny"


def refund(
    *,
    extra: bool = False,
    pay_fn: Callable[..., Any] = pay,
    decide_fn: Callable[[dict[str, Any]], str] = decide,
) -> CompiledGraph:
    """draft -> (route) pay | deny -> END; with ``extra``, pay -> extra -> END."""
    g = Graph("refund")
    g.add_node("draft", draft)
    g.add_node("pay", pay_fn)
    g.add_node("deny", deny)
    g.start("draft")
    g.route("draft", decide_fn, targets={"pay", "deny"})
    if extra:
        g.add_node("extra", notify)
        g.edge("pay", "extra")
        g.edge("extra", END)
    else:
        g.edge("pay", END)
    g.edge("deny", END)
    return g.compile()


def refund_engine(store: Store) -> GraphEngine:
    return GraphEngine(store, refund(), review_before=REVIEW_BEFORE)


def extended_engine(store: Store) -> GraphEngine:
    return GraphEngine(store, refund(extra=True), review_before=REVIEW_BEFORE)
