"""Tool declaration, schemas, validation and access decisions."""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
import pytest

from router import ConfigError, Policy, Principal, Retry, Tools, tool
from router.core.events import ToolCallDenied, ToolCallRejected, ToolStarted
from router.core.protocols import ProposedCall
from router.core.tools import record_calls

ANALYST = Principal(id="ann", roles=frozenset({"analyst"}))


@tool(permissions={"db:read"}, idempotent=True)
def lookup(name: str, limit: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3) -> list[str]:
    """Find customers by name.

    More text that the model does not need.
    """
    return [name] * limit


class Transfer(msgspec.Struct):
    source: str
    target: str
    cents: int
    tags: list[str] = []


@tool
async def transfer(order: Transfer) -> str:
    return f"{order.cents}"


TOOLS = Tools([lookup, transfer], policy=Policy({"analyst": {"db:read"}}))


def decide(name: str, arguments: str | bytes, principal: Principal = ANALYST) -> object:
    (call,) = record_calls(1, [ProposedCall("c1", name, arguments)])
    return TOOLS.decide(call, principal, at=0)[0]


def test_schema_is_built_once_from_the_signature() -> None:
    schema = TOOLS.schemas[0]["function"]
    assert schema["name"] == "lookup"
    assert schema["description"] == "Find customers by name."
    params = schema["parameters"]
    assert params["required"] == ["name"]
    assert params["additionalProperties"] is False
    assert params["properties"]["limit"] == {
        "type": "integer",
        "default": 3,
        "minimum": 1,
        "maximum": 10,
    }
    assert TOOLS.schemas is TOOLS.schemas  # built at registration, not per call
    json.dumps(TOOLS.schemas)  # plain JSON


def test_struct_tools_take_their_struct() -> None:
    params = TOOLS.schemas[1]["function"]["parameters"]
    assert params["required"] == ["source", "target", "cents"]
    event = decide("transfer", '{"source": "a", "target": "b", "cents": 5}')
    assert isinstance(event, ToolStarted) and not event.idempotent


def test_valid_arguments_start_the_call_with_canonical_arguments() -> None:
    event = decide("lookup", '{ "name" : "ada" }')
    assert isinstance(event, ToolStarted)
    assert event.arguments == '{"name":"ada","limit":3}'
    assert event.idempotent


@pytest.mark.parametrize(
    ("arguments", "code", "path", "reason"),
    [
        ('{"name": 5}', "invalid_arguments", "$.name", "Expected `str`, got `int`"),
        ("{}", "invalid_arguments", "$.name", "Object missing required field `name`"),
        (
            '{"name": "a", "extra": 1}',
            "invalid_arguments",
            "$.extra",
            "Object contains unknown field `extra`",
        ),
        ('{"name": "a", "limit": 11}', "invalid_arguments", "$.limit", "Expected `int` <= 10"),
        ('{"name": ', "malformed_json", "", "not JSON"),
        ("[1, 2]", "invalid_arguments", "$", "Expected `object`, got `array`"),
        (b'{"name": "\xff"}', "not_utf8", "", "not valid UTF-8"),
        ('{"name": "\udcff"}', "not_utf8", "", "not valid UTF-8"),
        ('{"name": "' + "x" * 70_000 + '"}', "oversized", "", "the limit is 65536"),
    ],
)
def test_invalid_arguments_are_rejected_with_path_and_reason(
    arguments: str | bytes, code: str, path: str, reason: str
) -> None:
    event = decide("lookup", arguments)
    assert isinstance(event, ToolCallRejected)
    assert (event.code, event.path) == (code, path)
    assert reason in event.reason


def test_nested_paths_are_exact() -> None:
    event = decide("transfer", '{"source": "a", "target": "b", "cents": 5, "tags": ["x", 7]}')
    assert isinstance(event, ToolCallRejected) and event.path == "$.tags[1]"


def test_unknown_tool_names_the_known_ones() -> None:
    event = decide("drop_tables", "{}")
    assert isinstance(event, ToolCallRejected) and event.code == "unknown_tool"
    assert "lookup, transfer" in event.reason


def test_access_is_checked_before_the_arguments() -> None:
    event = decide("lookup", "garbage", Principal(id="bob", roles=frozenset({"intern"})))
    assert isinstance(event, ToolCallDenied)
    assert (event.principal, event.missing) == ("bob", ("db:read",))


def test_a_role_not_in_the_policy_grants_its_own_name() -> None:
    def echo(x: int = 0) -> int:
        return x

    tools = Tools([tool(echo, permissions={"ops"})])
    (call,) = record_calls(1, [ProposedCall("c", "echo", "{}")])
    assert isinstance(
        tools.decide(call, Principal(id="a", roles=frozenset({"ops"})), 0)[0], ToolStarted
    )
    assert isinstance(
        tools.decide(call, Principal(id="b", roles=frozenset({"dev"})), 0)[0], ToolCallDenied
    )


def test_call_ids_are_made_unique_within_a_turn() -> None:
    calls = record_calls(
        4, [ProposedCall("x", "a", "{}"), ProposedCall("x", "a", "{}"), ProposedCall("", "a", "{}")]
    )
    assert [c.id for c in calls] == ["x", "call_4_1", "call_4_2"]


def test_bad_declarations_are_config_errors() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def star(*args: int) -> int:
        return 0

    def weird(x: object) -> None:
        return None

    for fn in (untyped, star, weird):
        with pytest.raises(ConfigError):
            tool(fn)
    with pytest.raises(ConfigError, match="must match"):
        tool(lambda: 1, name="bad name!")
    with pytest.raises(ConfigError, match="two tools"):
        Tools([lookup, lookup])
    with pytest.raises(ConfigError):
        Retry(attempts=0)


def test_retry_schedule_is_deterministic() -> None:
    retry = Retry(attempts=5, base_delay_s=0.1, factor=2, max_delay_s=0.3)
    assert [retry.delay_before(n) for n in range(2, 6)] == [0.1, 0.2, 0.3, 0.3]


def test_arguments_nested_beyond_the_decoders_depth_are_rejected_not_raised() -> None:
    @tool
    def store_blob(blob: dict[str, Any]) -> int:
        return 1

    (call,) = record_calls(
        1, [ProposedCall("c1", "store_blob", '{"blob":' + '{"a":' * 5000 + "1" + "}" * 5001)]
    )
    event = Tools([store_blob]).decide(call, ANALYST, at=0)[0]
    assert (
        isinstance(event, ToolCallRejected)
        and event.reason == "the arguments nest too deeply to be checked"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"permissions": "crm:read"}, "not the string 'crm:read'"),
        ({"permissions": ["crm:read", ""]}, "non-empty string"),
        ({"timeout_s": 0}, "timeout_s must be a positive number"),
        ({"timeout_s": -1}, "timeout_s must be a positive number"),
        ({"timeout_s": float("inf")}, "timeout_s must be a positive number"),
        ({"timeout_s": True}, "timeout_s must be a positive number"),
        ({"retry": 3}, "retry must be a Retry"),
        ({"max_argument_bytes": 0}, "a size cap must be a positive integer"),
        ({"max_result_bytes": -1}, "a size cap must be a positive integer"),
    ],
)
def test_a_declaration_that_would_misbehave_is_refused_at_registration(
    options: dict[str, Any], message: str
) -> None:
    def lookup(customer_id: int) -> int:
        """Look a customer up."""
        return customer_id

    with pytest.raises(ConfigError, match=message):
        tool(**options)(lookup)
    with pytest.raises(ConfigError, match="attempts"):
        Retry(attempts=0)
    assert tool(permissions=(p for p in ["crm:read"]))(lookup).permissions == {"crm:read"}
