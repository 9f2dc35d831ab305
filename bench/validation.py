"""validation: decode and validate one tool call's arguments against the tool's schema:
router's precompiled msgspec decoder (with its access check and canonical re-encoding)
against pydantic's TypeAdapter.validate_json on the same schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from router import Principal, Tools, tool
from router.core.events import ToolCall

from .measure import Record, record, time_calls
from .peers import Samples
from .system import VERSION

ARGS = (
    '{"customer_id": 42, "currency": "EUR", "note": "duplicate charge in March",'
    ' "lines": [{"sku": "A-100", "quantity": 2, "cents": 60000},'
    ' {"sku": "B-7", "quantity": 1, "cents": 1500}]}'
)


class Line(msgspec.Struct):
    sku: str
    quantity: Annotated[int, msgspec.Meta(ge=1)]
    cents: int


@tool
def refund(customer_id: int, currency: str, lines: list[Line], note: str = "") -> str:
    """Refund some order lines."""
    return "ok"


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    n = 50 if quick else 300
    tools, who = Tools([refund]), Principal(id="bench")
    call = ToolCall(id="c", name="refund", arguments=ARGS)
    assert type(tools.decide(call, who, 0)[0]).__name__ == "ToolStarted"
    per_call = Samples(time_calls(lambda: tools.decide(call, who, 0), n, inner=100, warmup=1000))
    records = [
        record(
            "validation",
            "router",
            VERSION,
            "-",
            per_call,
            "msgspec decode + access check + canonical arguments",
            unit="us/call",
        )
    ]
    try:
        import pydantic
    except ImportError:
        return records

    class PLine(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        sku: str
        quantity: Annotated[int, pydantic.Field(ge=1)]
        cents: int

    class PRefund(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        customer_id: int
        currency: str
        lines: list[PLine]
        note: str = ""

    adapter = pydantic.TypeAdapter(PRefund)
    adapter.validate_json(ARGS)
    records.append(
        record(
            "validation",
            "pydantic",
            pydantic.VERSION,
            "-",
            Samples(time_calls(lambda: adapter.validate_json(ARGS), n, inner=100, warmup=1000)),
            "TypeAdapter.validate_json",
            unit="us/call",
        )
    )
    records[1].vs_router = round(records[1].p50_us_per_step / records[0].p50_us_per_step, 1)
    return records
