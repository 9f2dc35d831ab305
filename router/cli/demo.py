"""The demo agent behind ``router demo``: real tools, a scripted model, a SQLite log.

A support agent answers a refund question. It reads a customer from a small SQLite
table (only the ``support`` and ``analyst`` roles may), computes with a calculator,
and tries to issue a refund, which needs a permission its principal lacks.
"""

from __future__ import annotations

import ast
import operator
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from ..core.access import Policy
from ..core.events import Limits, Principal, Usage
from ..core.limits import Price, PriceTable
from ..core.protocols import Model, ModelTurn, ProposedCall, Store
from ..core.tools import Tools, tool
from ..models.scripted import ScriptedModel
from ..run.engine import Engine
from ..run.runtime import Runtime

__all__ = [
    "LIMITS",
    "MODEL",
    "PRICES",
    "PRINCIPAL",
    "QUESTION",
    "crm_path",
    "demo_engine",
    "demo_model",
    "demo_tools",
]

MODEL = "demo-model"
# List prices (USD per million tokens) of the demo's models. A cost ceiling needs a price
# for whatever model answers: one the table lacks is priced at the dearest here.
RATES = {
    MODEL: Price(input_per_mtok=3.0, output_per_mtok=15.0),
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6),
    "claude-sonnet-4-5": Price(input_per_mtok=3.0, output_per_mtok=15.0),
}
PRICES = PriceTable(RATES)
LIMITS = Limits(
    max_steps=12, max_tool_calls=20, max_total_tokens=20_000, max_cost_usd=0.05, deadline_s=60
)
PRINCIPAL = Principal(id="agent-7", roles=frozenset({"support"}))
POLICY = Policy(
    {"support": {"customers:read"}, "analyst": {"customers:read"}, "billing": {"refunds:write"}}
)
QUESTION = (
    "Customer 42 was charged 1,200.00 twice in March. What refund is due after the 150.00 fee, "
    "what balance will it leave, and please refund it."
)

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return float(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_evaluate(node.operand)))
    raise ValueError(f"unsupported expression: {ast.dump(node)[:60]}")


class Customer(msgspec.Struct):
    id: int
    name: str
    plan: str
    balance: float


def demo_tools(crm_path: str | Path) -> Tools:
    """The demo's tools; the customer table lives in its own SQLite file at crm_path."""
    crm = str(crm_path)
    with sqlite3.connect(crm) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS customers "
            "(id INTEGER PRIMARY KEY, name TEXT, plan TEXT, balance REAL)"
        )
        db.executemany(
            "INSERT OR IGNORE INTO customers VALUES (?, ?, ?, ?)",
            [
                (7, "Ada Byron", "team", 0.0),
                (42, "Grace Hopper", "enterprise", -2400.0),
                (99, "Alan Kay", "free", 0.0),
            ],
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS refunds "
            "(call_id TEXT PRIMARY KEY, customer_id INTEGER, amount REAL)"
        )
    db.close()

    @tool(inline=True, idempotent=True)
    def calculate(expression: str) -> float:
        """Evaluate an arithmetic expression (+ - * / % ** and parentheses)."""
        return _evaluate(ast.parse(expression, mode="eval"))

    @tool(idempotent=True, permissions={"customers:read"}, timeout_s=5)
    def lookup_customer(customer_id: int) -> Customer | None:
        """Read one customer's record from the CRM."""
        with sqlite3.connect(crm) as conn:
            row = conn.execute(
                "SELECT id, name, plan, balance FROM customers WHERE id = ?", (customer_id,)
            ).fetchone()
        conn.close()
        return Customer(*row) if row else None

    @tool(permissions={"refunds:write"})
    def issue_refund(customer_id: int, amount: float) -> str:
        """Refund an amount to a customer. Not idempotent: it moves money."""
        with sqlite3.connect(crm) as conn:
            conn.execute(
                "INSERT INTO refunds (call_id, customer_id, amount) VALUES (?, ?, ?)",
                (f"{customer_id}:{amount}", customer_id, amount),
            )
        conn.close()
        return f"refunded {amount:.2f} to customer {customer_id}"

    return Tools([calculate, lookup_customer, issue_refund], policy=POLICY)


def _turn(*calls: tuple[str, str], text: str = "", tokens: tuple[int, int]) -> ModelTurn:
    proposed = tuple(ProposedCall(id="", name=name, arguments=args) for name, args in calls)
    return ModelTurn(
        text=text, tool_calls=proposed, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1])
    )


def demo_model() -> ScriptedModel:
    """The demo's scripted turns: one invalid call it then corrects, parallel calls, a
    denied refund and a final answer."""
    return ScriptedModel(
        [
            _turn(("lookup_customer", '{"customer_id": 42}'), tokens=(412, 21)),
            _turn(("calculate", '{"expr": "1200 - 150"}'), tokens=(540, 18)),
            _turn(("calculate", '{"expression": "1200 - 150"}'), tokens=(611, 19)),
            _turn(("issue_refund", '{"customer_id": 42, "amount": 1050}'), tokens=(668, 24)),
            _turn(
                ("calculate", '{"expression": "-2400 + 1050"}'),
                ("calculate", '{"expression": "1050 / 1200 * 100"}'),
                tokens=(742, 37),
            ),
            _turn(
                text="Grace Hopper (customer 42) is due 1,050.00 (1,200.00 less the 150.00 fee, "
                "87.5% of the duplicate charge), which leaves a balance of -1,350.00. "
                "I may not issue refunds, so I have escalated it to billing.",
                tokens=(860, 48),
            ),
        ],
        name=MODEL,
    )


def crm_path(db: str) -> Path:
    """Where the demo keeps its CRM table: beside a SQLite log, or here for PostgreSQL."""
    if db.startswith(("postgresql://", "postgres://")):
        return Path("router-demo-crm.sqlite")
    return Path(db).with_name(Path(db).stem + "-crm.sqlite")


def demo_engine(
    store_or_runtime: Store | Runtime, crm_path: str | Path, model: Model | None = None
) -> Engine:
    """The demo agent on ``store_or_runtime``, its CRM table in the SQLite file at
    ``crm_path``; the scripted model unless another ``model`` (a real provider) is given."""
    model = model or demo_model()
    prices = PRICES
    if model.name not in RATES:
        dearest = max(RATES.values(), key=lambda p: p.input_per_mtok + p.output_per_mtok)
        prices = PriceTable({**RATES, model.name: dearest})
    return Engine(
        store_or_runtime,
        model,
        demo_tools(crm_path),
        limits=LIMITS,
        prices=prices,
        agent="support-demo",
    )
