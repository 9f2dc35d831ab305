"""JSON Schema compiled to checks: the official suite, real tool schemas, refusals, tools."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router import Engine, MemoryStore, Phase, Principal, SchemaError, Tools, tool
from router.cli import main
from router.cli.conformance import check_suite, check_tool_schemas, conforms
from router.core.events import Message
from router.core.protocols import ModelTurn
from router.models.scripted import ScriptedModel, call, say
from router.schema import BFCL, SchemaOptions, compile_schema, standard_schema

CONFORMANCE = Path(__file__).resolve().parent / "conformance"
SUITE = CONFORMANCE / "json-schema-test-suite" / "draft2020-12"
BFCL_DIR = CONFORMANCE / "tool-schemas" / "bfcl"


def failure(schema: Any, value: Any) -> tuple[str, str] | None:
    result = compile_schema(schema).validate(value)
    return None if result is None else (result.where, result.reason)


def test_every_supported_keyword_passes_the_official_suite() -> None:
    results = {r.file: r for r in check_suite(SUITE)}
    supported = [r for r in results.values() if r.supported]
    assert len(supported) >= 36
    assert [f for r in supported for f in r.failures] == []
    assert all(
        r.passed > 0 for r in supported if r.file != "defs.json"
    )  # defs.json refers to the metaschema
    assert results["type.json"].passed == 80 and results["ref.json"].passed > 40
    assert (
        results["unevaluatedProperties.json"].passed == 0
    )  # refused at registration, never half-checked


def test_real_tool_schemas_accept_their_answers_and_reject_every_mutation() -> None:
    result = check_tool_schemas(BFCL_DIR)
    assert result.compiled == result.tools == 554
    assert result.wrongly_refused == () and result.wrongly_accepted == ()
    assert result.rejected == result.reject_total == 1332
    assert (
        result.accepted - result.conflict_accepted
        == result.accept_total - result.conflict_total
        == 896
    )
    assert (
        0 < result.conflict_accepted < result.conflict_total
    )  # nulls for null defaults pass; enum slips do not


def test_the_conformance_command_prints_the_figures_and_exits_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["conformance", str(CONFORMANCE), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "supported keywords: " in out and "(100.0%)" in out
    assert "reject cases rejected: 1332/1332 (100.0%)" in out
    figures = orjson.loads((tmp_path / "c.json").read_bytes())
    assert {r["file"] for r in figures["suite"]} >= {"enum.json", "oneOf.json"}


def test_conforms_is_false_when_one_test_fails() -> None:
    suite, tools = check_suite(SUITE), check_tool_schemas(BFCL_DIR)
    broken = [msgspec.structs.replace(suite[0], failed=1, failures=("x",)), *suite[1:]]
    assert conforms(suite, tools) and not conforms(broken, tools)


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties"),
        ({"properties": {"a": {"typo_minimum": 3}}}, "typo_minimum"),
        ({"$ref": "other.json#/x"}, "$ref"),
        ({"$ref": "#anchor"}, "$ref"),
        ({"$ref": "#/$defs/missing"}, "$ref"),
        (
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            },
            "$ref",
        ),
        ({"pattern": "("}, "pattern"),
        ({"$schema": "https://example.com/my-own-metaschema"}, "$schema"),
        (
            {
                "$schema": "http://json-schema.org/draft-04/schema#",
                "minimum": 1,
                "exclusiveMinimum": True,
            },
            "exclusiveMinimum",
        ),
        ({"type": "dict"}, "type"),
        ({"type": ""}, "type"),
        ({"type": []}, "type"),
        ({"type": ["string", ""]}, "type"),
        ({"type": ["string", "string"]}, "type"),
        ({"properties": {"a": {"type": 3}}}, "type"),
        ({"minLength": -1}, "minLength"),
        ({"multipleOf": 0}, "multipleOf"),
        ({"anyOf": []}, "anyOf"),
        ({"properties": {"a": {"$id": "x"}}}, "$id"),
    ],
)
def test_what_would_be_ignored_or_cannot_resolve_is_refused_at_compile_time(
    schema: Any, keyword: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        compile_schema(schema)
    assert caught.value.keyword == keyword
    assert caught.value.code == "schema_error"


def test_failures_name_the_exact_path() -> None:
    schema = {
        "type": "object",
        "properties": {"orders": {"type": "array", "items": {"$ref": "#/$defs/order"}}},
        "$defs": {
            "order": {
                "type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}},
                "required": ["qty"],
                "additionalProperties": False,
            }
        },
    }
    assert failure(schema, {"orders": [{"qty": 1}, {"qty": 0}]}) == (
        "$.orders[1].qty",
        "Expected a number >= 1",
    )
    assert failure(schema, {"orders": [{"qty": 1, "x": 2}]}) == (
        "$.orders[0]",
        "Object contains unknown field `x`",
    )
    assert failure(schema, {"orders": [{}]}) == (
        "$.orders[0]",
        "Object missing required field `qty`",
    )
    assert failure({"properties": {"a b": {"type": "string"}}}, {"a b": 1})[0] == "$['a b']"  # type: ignore[index]


def test_recursive_schemas_check_every_level() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    deep: dict[str, Any] = {"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]}
    assert failure(tree, deep) == (
        "$.children[0].children[0].value",
        "Expected `integer`, got `string`",
    )


def test_json_equality_rules_enum_const_and_unique_items() -> None:
    assert failure({"enum": [1, "a"]}, 1.0) is None
    assert failure({"enum": [1]}, True) is not None  # true is not 1 in JSON
    assert failure({"const": {"a": [1]}}, {"a": [1.0]}) is None
    assert failure({"uniqueItems": True}, [1, 1.0]) is not None
    assert failure({"uniqueItems": True}, [0, False]) is None


def test_numbers_follow_json_schema_not_python() -> None:
    assert failure({"type": "integer"}, 2.0) is None
    assert failure({"type": "integer"}, True) is not None
    assert (
        failure({"multipleOf": 0.01}, 0.07) is None
    )  # exact decimal arithmetic, not float division
    assert failure({"type": "integer", "multipleOf": 0.123456789}, 1e308) is not None


def test_decode_refuses_malformed_json_and_invalid_values_with_msgspec_errors() -> None:
    compiled = compile_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    assert compiled.decode(b'{"n": 3, "extra": true}') == {"n": 3, "extra": True}
    with pytest.raises(msgspec.DecodeError):
        compiled.decode("{nope")
    with pytest.raises(
        msgspec.ValidationError, match=r"Expected `integer`, got `string` - at `\$.n`"
    ):
        compiled.decode('{"n": "3"}')


def test_bfcl_spellings_need_the_bfcl_options_and_are_shown_to_the_model_as_standard() -> None:
    schema = {
        "type": "dict",
        "properties": {
            "x": {"type": "float"},
            "tag": {"type": "string", "default": None},
            "v": {"type": "any"},
            "o": {"type": "string", "optional": True},
        },
    }
    with pytest.raises(SchemaError):
        compile_schema(schema)
    assert standard_schema(schema, BFCL) == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "tag": {"type": ["string", "null"], "default": None},
            "v": {},
            "o": {"type": "string"},
        },
    }
    assert compile_schema(schema, BFCL).validate({"x": 1, "tag": None, "v": [1]}) is None


def bfcl_rows() -> list[tuple[Any, Any]]:
    tools = {
        t["tool_id"]: t["parameters"]
        for t in map(orjson.loads, (BFCL_DIR / "tools.jsonl").read_bytes().splitlines())
    }
    rows = [
        orjson.loads(line)
        for name in ("accept", "reject")
        for line in (BFCL_DIR / f"derived/{name}.jsonl").read_bytes().splitlines()
    ]
    return [(tools[r["tool_id"]], r["arguments"]) for r in rows]


ROWS = bfcl_rows()


@settings(deadline=None, max_examples=300)
@given(st.sampled_from(ROWS))
def test_the_schema_shown_to_the_model_enforces_what_router_enforces(row: tuple[Any, Any]) -> None:
    schema, arguments = row
    enforced = compile_schema(schema, BFCL).validate(arguments) is None
    shown = compile_schema(standard_schema(schema, BFCL)).validate(arguments) is None
    assert enforced == shown


@tool(
    name="book",
    parameters={
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["blue", "red"]},
            "hours": {"type": "integer", "minimum": 1},
        },
        "required": ["room", "hours"],
        "additionalProperties": False,
    },
    inline=True,
)
def book(arguments: dict[str, Any]) -> str:
    return f"{arguments['room']} for {arguments['hours']}h"


def test_a_json_schema_tool_refuses_bad_schemas_when_declared() -> None:
    with pytest.raises(SchemaError, match="tool 'bad'"):
        tool(
            name="bad",
            parameters={"type": "object", "if": {}, "then": {}, "unevaluatedProperties": False},
        )(book.fn)
    with pytest.raises(SchemaError, match='"type": "object"'):
        tool(name="bad", parameters={"type": "array"})(book.fn)


@pytest.mark.anyio
async def test_a_json_schema_tool_runs_in_the_loop_with_errors_fed_back() -> None:
    seen: list[str] = []

    def script(messages: Sequence[Message]) -> ModelTurn:
        seen.append(messages[-1].content)
        turns = [
            call("book", '{"room": "green", "hours": 2}'),
            call("book", '{"room": "red", "hours": 2}'),
            say("booked"),
        ]
        return turns[sum(m.role == "assistant" for m in messages)]

    store = MemoryStore()
    engine = Engine(store, ScriptedModel(script), Tools([book]))
    result = await engine.start("book a room", principal=Principal(id="u"))
    assert result.phase is Phase.DONE
    assert seen[1] == 'error[invalid_arguments] at $.room: Expected one of "blue", "red"'
    assert seen[2] == '"red for 2h"'
    assert Tools([book]).schemas[0]["function"]["parameters"]["additionalProperties"] is False


def suite_cases() -> list[tuple[Any, Any]]:
    cases = []
    for path in sorted(SUITE.glob("*.json")):
        for group in orjson.loads(path.read_bytes()):
            try:
                compiled = compile_schema(group["schema"])
            except SchemaError:
                continue
            cases.extend((compiled, test["data"]) for test in group["tests"])
    return cases


def fast_accepts(compiled: Any, value: Any) -> bool:
    if compiled.fast is None:
        return False
    try:
        compiled.fast.decode(orjson.dumps(value))
    except msgspec.ValidationError:
        return False
    return True


def test_msgspecs_fast_path_never_accepts_what_the_checks_refuse() -> None:
    fast = [(c, data) for c, data in suite_cases() if c.fast is not None]
    assert len(fast) > 200  # the fast path covers much of the suite, so this is not vacuous
    unsound = [
        (c.schema, data)
        for c, data in fast
        if fast_accepts(c, data) and c.validate(data) is not None
    ]
    assert unsound == []
    tools = [compile_schema(schema, BFCL) for schema, _ in ROWS]
    # all but one real BFCL tool (an enum of strings on an array) take the fast path
    assert sum(t.fast is not None for t in tools) >= 0.99 * len(tools)
    assert all(
        t.validate(args) is None
        for t, (_, args) in zip(tools, ROWS, strict=True)
        if fast_accepts(t, args)
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None, max_examples=400)
@given(st.sampled_from(range(len(ROWS))), json_values)
def test_random_values_never_pass_the_fast_path_alone(index: int, noise: Any) -> None:
    schema, arguments = ROWS[index]
    compiled = compile_schema(schema, BFCL)
    mutated = dict(arguments)
    if mutated:
        mutated[sorted(mutated)[0]] = noise
    for value in (noise, mutated):
        if fast_accepts(compiled, value):
            assert compiled.validate(value) is None


def test_the_readme_states_the_figures_the_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    main(["conformance", str(CONFORMANCE)])
    out = capsys.readouterr().out
    supported = re.search(
        r"supported keywords: (\d+/\d+) tests passed \(100.0%\) in (\d+) files", out
    )
    assert supported is not None
    assert (
        f"the {supported.group(2)} files of supported keywords | "
        f"{supported.group(1)} tests passed (100%)" in readme
    )
    for figure in re.findall(
        r"(\d+/\d+) \(100.0%\)|compiled: (\d+/\d+)|\+ (\d+/\d+) of the rows", out
    ):
        shown = next(f for f in figure if f)
        assert shown in readme, shown


def test_patterns_match_as_ecma_262_reads_them() -> None:
    assert (
        failure({"pattern": "^[a-z]+$"}, "abc\n") is not None
    )  # Python's $ would match before the newline
    assert (
        failure({"pattern": "^\\d+$"}, "\u0661\u0662") is not None
    )  # Arabic-Indic digits are not \\d
    assert failure({"pattern": "^[\\d-]+$"}, "12-3") is None
    assert failure({"pattern": "^\\w+$"}, "caf\u00e9") is not None
    # . stops at every line terminator; \s and \S are ECMA-262's white space
    assert failure({"pattern": "^a.c$"}, "a\u2028c") is not None
    assert failure({"pattern": "^a.c$"}, "a\rc") is not None
    assert failure({"pattern": "^a.c$"}, "axc") is None
    assert failure({"pattern": "^\\s$"}, "\x1c") is not None  # a separator Python calls space
    assert failure({"pattern": "^\\s$"}, "\ufeff") is None  # a space Python does not
    assert failure({"pattern": "^[\\s]+$"}, "\u3000 \t") is None
    assert failure({"pattern": "^\\S+$"}, "\ufeff") is not None
    # \b and \B by ASCII word characters: no boundary before an accented letter alone
    assert failure({"pattern": "\\b\u00e9"}, "\u00e9") is not None
    assert failure({"pattern": "x\\b"}, "x\u00e9") is None
    assert failure({"pattern": "x\\B"}, "xy") is None
    assert failure({"pattern": "^[\\b]$"}, "\b") is None  # a backspace in a class
    for unsupported in ("^\\p{Letter}+$", "[^\\D]", "[\\S]", "a[]b"):
        with pytest.raises(SchemaError, match="ECMA-262"):
            compile_schema({"pattern": unsupported})
    tool_schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    }
    with pytest.raises(msgspec.ValidationError):
        compile_schema(tool_schema).decode(
            '{"code": "ABC\\n"}'
        )  # the fast path reads it the same way


def test_deeply_nested_values_are_refused_not_crashed_on() -> None:
    nested = {
        "$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}}},
        "$ref": "#/$defs/n",
    }
    with pytest.raises(msgspec.ValidationError, match="nests too deeply"):
        compile_schema(nested).decode('{"c":' * 3000 + "1" + "}" * 3000)
    assert failure({"uniqueItems": True}, [[[[1]]], [[[1]]]]) is not None


def test_multiple_of_is_exact_for_large_values() -> None:
    assert failure({"multipleOf": 0.5}, 1e70) is None
    assert failure({"multipleOf": 0.5}, 10**70) is None
    assert failure({"multipleOf": 0.5}, 10**70 + 0.25) is None  # the float is 1e70 exactly
    assert failure({"multipleOf": 0.3}, 0.9) is None


def test_what_msgspec_cannot_check_exactly_stays_with_the_checks() -> None:
    string_or_list = {
        "type": "object",
        "properties": {
            "tag": {
                "anyOf": [
                    {"type": "string", "pattern": "^[a-z]+$"},
                    {"type": "array", "items": {"type": "string"}},
                ]
            }
        },
    }
    assert compile_schema(string_or_list).fast is None  # msgspec 0.22 mishandles this union
    any_enum = compile_schema(
        {"type": "object", "properties": {"v": {"type": "any", "enum": [1, 2]}}}, BFCL
    )
    with pytest.raises(msgspec.ValidationError):
        any_enum.decode('{"v": 3}')
    escaped = {
        "type": "object",
        "properties": {"v": {"$ref": "#/$defs/a%20b"}},
        "$defs": {"a b": {"type": "integer"}, "a%20b": {"type": "string"}},
    }
    with pytest.raises(msgspec.ValidationError):
        compile_schema(escaped).decode(
            '{"v": "text"}'
        )  # the pointer is percent-decoded: it names "a b"


def test_earlier_drafts_as_typescript_mcp_servers_write_them_are_read() -> None:
    zod = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string", "minLength": 1}},
        "required": ["city"],
        "additionalProperties": False,
    }
    compiled = compile_schema(zod)
    assert compiled.decode('{"city": "Oslo"}') == {"city": "Oslo"}
    with pytest.raises(msgspec.ValidationError):
        compiled.decode('{"city": "Oslo", "units": "metric"}')


PETSTORE_ADD_PET = {  # an OpenAPI 3.0 operation's request body schema, as written in the wild
    "type": "object",
    "required": ["name", "photoUrls"],
    "properties": {
        "id": {"type": "integer", "format": "int64", "example": 10},
        "name": {"type": "string", "example": "doggie", "x-order": 1},
        "category": {"type": "object", "nullable": True, "properties": {"id": {"type": "integer"}}},
        "photoUrls": {"type": "array", "items": {"type": "string"}, "xml": {"wrapped": True}},
        "status": {"type": "string", "enum": ["available", "pending", "sold"], "nullable": True},
    },
    "x-tags": ["pet"],
}


def test_openapi_schemas_are_read_with_the_openapi_options() -> None:
    from router.schema import OPENAPI

    with pytest.raises(SchemaError):
        compile_schema(PETSTORE_ADD_PET)  # "nullable" and "example" are not JSON Schema
    compiled = compile_schema(PETSTORE_ADD_PET, OPENAPI)
    assert compiled.fast is not None
    assert (
        compiled.decode('{"name": "rex", "photoUrls": [], "category": null, "status": null}')[
            "category"
        ]
        is None
    )
    for bad in (
        '{"name": "rex"}',
        '{"name": "rex", "photoUrls": [], "status": "lost"}',
        '{"name": null, "photoUrls": []}',
    ):
        with pytest.raises(msgspec.ValidationError):
            compiled.decode(bad)
    shown = standard_schema(PETSTORE_ADD_PET, OPENAPI)
    assert shown["properties"]["status"] == {
        "type": ["string", "null"],
        "enum": ["available", "pending", "sold", None],
    }
    assert "x-tags" not in shown and "example" not in shown["properties"]["id"]
    for value in (
        {"name": "a", "photoUrls": ["u"], "status": None},
        {"name": "a", "photoUrls": [], "id": "7"},
    ):
        assert (compiled.validate(value) is None) == (compile_schema(shown).validate(value) is None)


PATTERNS = ["^a", "b$", "^[a-z]+$", "\\d", "^\\w*$", "x|y"]


def schemas(depth: int = 2) -> st.SearchStrategy[Any]:
    """Random schemas over the keywords msgspec's fast path may take."""
    scalar = st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["string", "integer", "number", "boolean", "null"])
            | st.lists(
                st.sampled_from(["string", "integer", "number", "null"]),
                min_size=1,
                max_size=3,
                unique=True,
            ),
            "minLength": st.integers(0, 3),
            "maxLength": st.integers(0, 5),
            "pattern": st.sampled_from(PATTERNS),
            "minimum": st.integers(-5, 5) | st.floats(-5, 5),
            "maximum": st.integers(-5, 5),
            "exclusiveMinimum": st.integers(-5, 5),
            "multipleOf": st.integers(1, 4),
            "enum": st.lists(st.text(max_size=2), min_size=1, max_size=3)
            | st.lists(st.integers(-2, 2), min_size=1),
            "default": st.none(),
            "description": st.just("d"),
        },
    )
    if depth == 0:
        return scalar
    child = schemas(depth - 1)
    array = st.fixed_dictionaries(
        {"type": st.just("array"), "items": child},
        optional={"minItems": st.integers(0, 2), "maxItems": st.integers(0, 3)},
    )
    names = st.sampled_from(["a", "b", "a b", ""])
    obj = st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(names, child, max_size=3)},
        optional={
            "required": st.lists(names, max_size=2, unique=True),
            "additionalProperties": st.booleans(),
        },
    )
    return (
        scalar
        | array
        | obj
        | st.fixed_dictionaries({"anyOf": st.lists(child, min_size=1, max_size=3)})
    )


def values_for(depth: int = 3) -> st.SearchStrategy[Any]:
    leaf = (
        st.none()
        | st.booleans()
        | st.integers(-6, 6)
        | st.floats(-6, 6, allow_nan=False)
        | st.sampled_from(["", "a", "ab", "b", "x", "1", "abc\n", "\u0661", "é"])
    )
    return st.recursive(
        leaf,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "b", "a b", "", "c"]), inner, max_size=3)
        ),
        max_leaves=8,
    )


@settings(deadline=None, max_examples=600)
@given(schemas(), st.lists(values_for(), min_size=1, max_size=4), st.booleans())
def test_random_schemas_never_let_the_fast_path_accept_what_the_checks_refuse(
    schema: Any, values: list[Any], bfcl: bool
) -> None:
    try:
        compiled = compile_schema(schema, BFCL if bfcl else SchemaOptions())
    except SchemaError:
        return
    for value in values:
        if fast_accepts(compiled, value):
            assert compiled.validate(value) is None, (schema, value)


def test_the_readme_states_each_keyword_files_figures() -> None:
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    for r in check_suite(SUITE):
        name = r.file.removesuffix(".json")
        figure = (
            f"{name} {r.passed}/{r.passed + r.failed}" if r.supported else f"{name} {r.refused}"
        )
        assert figure in readme, figure


def test_draft_07_spellings_are_mapped_exactly_by_the_draft_07_suites_own_cases() -> None:
    draft7 = CONFORMANCE / "json-schema-test-suite" / "draft7"
    results = {
        r.file: r for r in check_suite(draft7, draft="http://json-schema.org/draft-07/schema#")
    }
    assert set(results) == {"additionalItems.json", "dependencies.json", "items.json"}
    assert [f for r in results.values() for f in r.failures] == []
    assert [(r.passed, r.refused) for r in results.values()] == [(19, 0), (36, 0), (28, 0)]
    tool = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "pair": {"type": "array", "items": [{"type": "string"}], "additionalItems": False}
        },
        "dependencies": {"card": ["expiry"]},
    }
    assert failure(tool, {"pair": ["a"]}) is None
    assert failure(tool, {"pair": ["a", "b"]}) is not None
    assert failure(tool, {"card": "4111"}) is not None
