"""The precompiled checks of router.schema's applicators, the keywords that apply subschemas
(properties, items, contains, allOf, anyOf, oneOf, not, if, $ref), and the table of every
keyword's builder with the order the checks run in.

Builders follow the contract in router.schema.assertions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import SchemaError
from .assertions import (
    ASSERTION_BUILDERS,
    Builder,
    Check,
    Compiling,
    Failure,
    accept,
    check_all,
    read_count,
)

__all__ = ["BUILDERS", "ORDER", "present"]


def _object_applicators(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    """properties, patternProperties and additionalProperties, compiled together because
    additionalProperties applies to the names the other two do not match."""
    where = at.rsplit("/", 1)[0]
    compiled = _compile_properties(c, schema, where)
    by_pattern = _compile_pattern_properties(c, schema, where)
    extra = (
        c.child(schema["additionalProperties"], f"{where}/additionalProperties")
        if "additionalProperties" in schema
        else None
    )
    closed = schema.get("additionalProperties") is False
    if not by_pattern and extra is None:
        return _check_named_properties(tuple(compiled.items()))
    return _check_every_property(compiled, by_pattern, extra, closed)


def _compile_properties(c: Compiling, schema: dict[str, Any], where: str) -> dict[str, Check]:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{where}/properties", "properties", "must be an object")
    return {
        name: c.child(sub, f"{where}/properties/{_escape(name)}") for name, sub in props.items()
    }


def _compile_pattern_properties(
    c: Compiling, schema: dict[str, Any], where: str
) -> list[tuple[Callable[[str], re.Match[str] | None], Check]]:
    patterns = schema.get("patternProperties", {})
    if not isinstance(patterns, dict):
        raise SchemaError(f"{where}/patternProperties", "patternProperties", "must be an object")
    return [
        (
            c.pattern(p, f"{where}/patternProperties").search,
            c.child(sub, f"{where}/patternProperties/{_escape(p)}"),
        )
        for p, sub in patterns.items()
    ]


def _check_named_properties(items: tuple[tuple[str, Check], ...]) -> Check:
    """The check when only properties applies: each named property that is present."""

    def check_properties(v: Any) -> Failure | None:
        if type(v) is dict:
            for name, sub in items:
                if name in v:
                    failure = sub(v[name])
                    if failure is not None:
                        return failure.at(name)
        return None

    return check_properties


def _check_every_property(
    compiled: dict[str, Check],
    by_pattern: list[tuple[Callable[[str], re.Match[str] | None], Check]],
    extra: Check | None,
    closed: bool,
) -> Check:
    """The check when patternProperties or additionalProperties applies: every property."""

    def check(v: Any) -> Failure | None:
        if type(v) is not dict:
            return None
        for name, item in v.items():
            matched = False
            sub = compiled.get(name)
            if sub is not None:
                matched = True
                failure = sub(item)
                if failure is not None:
                    return failure.at(name)
            for search, pattern_check in by_pattern:
                if search(name) is not None:
                    matched = True
                    failure = pattern_check(item)
                    if failure is not None:
                        return failure.at(name)
            if not matched and extra is not None:
                if closed:
                    return Failure(f"Object contains unknown field `{name}`")
                failure = extra(item)
                if failure is not None:
                    return failure.at(name)
        return None

    return check


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _property_names(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.child(value, at)

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for name in v:
                failure = sub(name)
                if failure is not None:
                    return Failure(f"property name {name!r}: {failure.reason}")
        return None

    return check


def _dependent_schemas(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not isinstance(value, dict):
        raise SchemaError(at, "dependentSchemas", "must be an object")
    pairs = [(k, c.node(sub, f"{at}/{_escape(k)}")) for k, sub in value.items()]

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for key, sub in pairs:
                if key in v:
                    failure = sub(v)
                    if failure is not None:
                        return failure
        return None

    return check


def _array_applicators(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    """prefixItems and items, compiled together: items applies after the prefix."""
    where = at.rsplit("/", 1)[0]
    prefix_schemas = schema.get("prefixItems", [])
    if not isinstance(prefix_schemas, list):
        raise SchemaError(f"{where}/prefixItems", "prefixItems", "must be an array of schemas")
    prefix = [c.child(sub, f"{where}/prefixItems/{i}") for i, sub in enumerate(prefix_schemas)]
    if isinstance(schema.get("items"), list):
        raise SchemaError(
            f"{where}/items",
            "items",
            "an array of schemas is the tuple form of draft 7 and "
            "earlier; draft 2020-12 writes it as prefixItems",
        )
    rest = c.child(schema["items"], f"{where}/items") if "items" in schema else None
    start = len(prefix)

    def check(v: Any) -> Failure | None:
        if type(v) is not list:
            return None
        for i, (sub, item) in enumerate(zip(prefix, v, strict=False)):
            failure = sub(item)
            if failure is not None:
                return failure.at(i)
        if rest is not None:
            for i in range(start, len(v)):
                failure = rest(v[i])
                if failure is not None:
                    return failure.at(i)
        return None

    return check


def _contains(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.child(value, at)
    where = at.rsplit("/", 1)[0]
    least = (
        read_count("minContains", schema["minContains"], f"{where}/minContains")
        if "minContains" in schema
        else 1
    )
    most = (
        read_count("maxContains", schema["maxContains"], f"{where}/maxContains")
        if "maxContains" in schema
        else None
    )

    def check(v: Any) -> Failure | None:
        if type(v) is not list:
            return None
        found = sum(1 for item in v if sub(item) is None)
        if found < least:
            return Failure(f"Expected at least {least} item(s) matching `contains`, found {found}")
        if most is not None and found > most:
            return Failure(f"Expected at most {most} item(s) matching `contains`, found {found}")
        return None

    return check


def _schemas(c: Compiling, value: Any, at: str, name: str) -> list[Check]:
    if not isinstance(value, list) or not value:
        raise SchemaError(at, name, "must be a non-empty array of schemas")
    return [c.node(sub, f"{at}/{i}") for i, sub in enumerate(value)]


def _all_of(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    return check_all(_schemas(c, value, at, "allOf"))


def _any_of(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    subs = _schemas(c, value, at, "anyOf")

    def check(v: Any) -> Failure | None:
        reasons = []
        for sub in subs:
            failure = sub(v)
            if failure is None:
                return None
            reasons.append(failure.reason)
        return Failure(f"Expected a value matching one of `anyOf` ({'; '.join(reasons)})")

    return check


def _one_of(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    subs = _schemas(c, value, at, "oneOf")

    def check(v: Any) -> Failure | None:
        matched = sum(1 for sub in subs if sub(v) is None)
        if matched == 1:
            return None
        return Failure(f"Expected a value matching exactly one of `oneOf`, matched {matched}")

    return check


def _not(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.node(value, at)
    return lambda v: (
        Failure("Expected a value that does not match `not`") if sub(v) is None else None
    )


def _if(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    where = at.rsplit("/", 1)[0]
    condition = c.node(value, at)
    then = c.node(schema["then"], f"{where}/then") if "then" in schema else accept
    otherwise = c.node(schema["else"], f"{where}/else") if "else" in schema else accept
    return lambda v: then(v) if condition(v) is None else otherwise(v)


def _then_else(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    if "if" not in schema:
        c.node(
            value, at
        )  # applies to nothing without `if`, but a refused keyword inside is still refused
    return None


def _ref(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    return c.ref(value, at)


def present(schema: dict[str, Any], key: str) -> bool:
    """Whether a keyword (or, for a principal, one of its companions) is in the schema."""
    return key in schema or any(companion in schema for companion in _COMPANIONS.get(key, ()))


BUILDERS: Mapping[str, Builder] = {
    **ASSERTION_BUILDERS,
    "properties": _object_applicators,
    "propertyNames": _property_names,
    "dependentSchemas": _dependent_schemas,
    "items": _array_applicators,
    "contains": _contains,
    "allOf": _all_of,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "not": _not,
    "if": _if,
    "then": _then_else,
    "else": _then_else,
    "$ref": _ref,
}
# Keywords compiled by the principal they qualify: additionalProperties applies to the names
# that properties and patternProperties leave, items to what prefixItems leaves.
_COMPANIONS = {
    "properties": ("patternProperties", "additionalProperties"),
    "items": ("prefixItems",),
}
# The order checks run in: cheap type tests first; companions (and minContains, maxContains,
# then, else) are compiled with their principal.
ORDER = (
    "type",
    "enum",
    "const",
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "properties",
    "propertyNames",
    "dependentSchemas",
    "items",
    "contains",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
)
