"""json_schema: a JSON-Schema tool's arguments validated per call, router against
python-jsonschema and pydantic on the same schemas, in the same run.

Two tool schemas as they arrive in the wild: a flat one (the shape of most BFCL tools) and a
nested one (enum, pattern, bounds, an array of objects, additionalProperties false).
router: ``Tools.decide`` on a tool declared with ``parameters=`` (msgspec decode, the
compiled checks, the access check and canonical arguments). python-jsonschema: a prebuilt
Draft202012Validator on the parsed JSON. pydantic: a model written to the same schema,
``validate_json``. Before timing, all three must agree on a valid and an invalid call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from router import Principal, Tools, tool
from router.core.events import ToolCall

from .measure import Record, record, time_calls
from .peers import Samples
from .system import VERSION

FLAT = {
    "type": "object",
    "properties": {
        "base": {"type": "integer", "description": "The base of the triangle."},
        "height": {"type": "integer", "description": "The height of the triangle."},
        "unit": {"type": "string", "description": "The unit of measure."},
    },
    "required": ["base", "height"],
}
NESTED = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "integer", "minimum": 1},
        "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
        "note": {"type": "string", "maxLength": 200},
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "cents": {"type": "integer", "minimum": 0},
                },
                "required": ["sku", "quantity", "cents"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["customer_id", "currency", "lines"],
    "additionalProperties": False,
}
CASES = {
    "flat": (FLAT, '{"base": 10, "height": 5, "unit": "cm"}', '{"base": 10, "height": "5"}'),
    "nested": (
        NESTED,
        '{"customer_id": 42, "currency": "EUR", "note": "duplicate charge", "lines": ['
        '{"sku": "A-100", "quantity": 2, "cents": 60000}, '
        '{"sku": "B-7", "quantity": 1, "cents": 1500}]}',
        '{"customer_id": 42, "currency": "EUR", '
        '"lines": [{"sku": "a100", "quantity": 2, "cents": 1}]}',
    ),
}


def _router(schema: dict[str, Any]) -> tuple[Any, Any]:
    tools, who = (
        Tools([tool(name="t", parameters=schema)(lambda arguments: None)]),
        Principal(id="bench"),
    )

    def accepts(text: str) -> bool:
        return (
            type(tools.decide(ToolCall(id="c", name="t", arguments=text), who, 0)[0]).__name__
            == "ToolStarted"
        )

    def run(text: str) -> Any:
        return lambda: tools.decide(ToolCall(id="c", name="t", arguments=text), who, 0)

    return accepts, run


def _jsonschema(schema: dict[str, Any]) -> tuple[Any, Any, str] | None:
    try:
        import jsonschema
    except ImportError:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    return (
        lambda text: validator.is_valid(json.loads(text)),
        lambda text: lambda: validator.is_valid(json.loads(text)),
        jsonschema.__version__,
    )


def _pydantic(name: str) -> tuple[Any, Any, str] | None:
    try:
        import pydantic
    except ImportError:
        return None

    class Flat(pydantic.BaseModel):
        base: pydantic.StrictInt
        height: pydantic.StrictInt
        unit: pydantic.StrictStr | None = None

    class Line(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", strict=True)
        sku: Annotated[str, pydantic.Field(pattern=r"^[A-Z]+-[0-9]+$")]
        quantity: Annotated[int, pydantic.Field(ge=1)]
        cents: Annotated[int, pydantic.Field(ge=0)]

    class Nested(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid", strict=True)
        customer_id: Annotated[int, pydantic.Field(ge=1)]
        currency: Literal["USD", "EUR", "GBP"]
        note: Annotated[str, pydantic.Field(max_length=200)] | None = None
        lines: Annotated[list[Line], pydantic.Field(min_length=1, max_length=50)]

    adapter = pydantic.TypeAdapter(Flat if name == "flat" else Nested)

    def accepts(text: str) -> bool:
        try:
            adapter.validate_json(text)
        except pydantic.ValidationError:
            return False
        return True

    return accepts, lambda text: lambda: adapter.validate_json(text), pydantic.VERSION


async def run(quick: bool, peers: object, tmp: Path) -> list[Record]:
    n = 50 if quick else 300
    records: list[Record] = []
    for name, (schema, valid, invalid) in CASES.items():
        accepts, timed = _router(schema)
        assert accepts(valid) and not accepts(invalid)
        mine = record(
            "json_schema",
            "router",
            VERSION,
            name,
            Samples(time_calls(timed(valid), n, inner=100, warmup=1000)),
            "JSON-Schema tool: msgspec decode + compiled checks + access check",
            unit="us/call",
        )
        records.append(mine)
        for system, peer, note in (
            ("jsonschema", _jsonschema(schema), "Draft202012Validator, prebuilt"),
            ("pydantic", _pydantic(name), "the same schema as a model, validate_json"),
        ):
            if peer is None:
                continue
            peer_accepts, peer_timed, version = peer
            assert peer_accepts(valid) and not peer_accepts(invalid), (
                f"{system} disagrees on {name}"
            )
            theirs = record(
                "json_schema",
                system,
                version,
                name,
                Samples(time_calls(peer_timed(valid), n, inner=100, warmup=1000)),
                note,
                unit="us/call",
            )
            theirs.vs_router = round(theirs.p50_us_per_step / mine.p50_us_per_step, 1)
            records.append(theirs)
    return records
