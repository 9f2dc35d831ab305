"""msgspec types for the JSON Schemas that msgspec can check exactly: router.schema's fast path.

``msgspec_type(schema)`` returns a type such that ``msgspec.convert(value, type)`` succeeds
only for values the schema accepts, or None when the schema uses something msgspec cannot
check exactly (uniqueItems, oneOf, not, a recursive $ref, ...). The converse need not hold:
msgspec refuses ``1.0`` for an integer, which JSON Schema accepts, so a refusal is always
checked again by the precompiled checks, which give the verdict and the message. The
converted value is thrown away: the tool gets the decoded JSON, unknown properties included.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, Protocol, Union
from urllib.parse import unquote

import msgspec

from ..errors import SchemaError
from .pattern import python_pattern

__all__ = ["msgspec_type"]

_EXACT_LIMIT = 2**53  # numeric bounds beyond this lose precision when msgspec compares floats
_HARMLESS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",
    }
)
_FAST = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "anyOf",
        "$ref",
    }
)
_names = itertools.count()


class _Inexact(Exception):
    """The schema uses something msgspec cannot check exactly."""


class Reading(Protocol):
    """How router.schema reads non-standard schemas (its SchemaOptions)."""

    @property
    def type_aliases(self) -> dict[str, str]: ...

    def is_annotation(self, key: str) -> bool: ...

    def adds_null(self, schema: dict[str, Any]) -> bool: ...


def msgspec_type(schema: Any, options: Reading) -> Any:
    """The exact msgspec type for the root ``schema``, or None."""
    try:
        built = _Builder(schema, options).type_of(schema, ())
        msgspec.convert(None, _make_union(built, None))  # msgspec validates the type on first use
    except (_Inexact, TypeError, ValueError, SchemaError):
        return None
    return built


class _Builder:
    def __init__(self, root: Any, options: Reading) -> None:
        self.root = root
        self.aliases = options.type_aliases
        self.options = options

    def meaningful(self, schema: dict[str, Any]) -> set[str]:
        """The keywords of a node that constrain something."""
        return {k for k in schema if k not in _HARMLESS and not self.options.is_annotation(k)}

    def type_of(self, schema: Any, refs: tuple[str, ...]) -> Any:
        if schema is True:
            return Any
        if not isinstance(schema, dict):
            raise _Inexact
        keys = self.meaningful(schema)
        if not keys:
            built: Any = Any
        elif keys - _FAST:
            raise _Inexact
        elif "$ref" in keys:
            built = self._ref(schema, keys, refs)
        elif "anyOf" in keys:
            if keys != {"anyOf"}:
                raise _Inexact
            built = _union([self.type_of(s, refs) for s in schema["anyOf"]])
        else:
            built = self._typed(schema, keys, refs)
        return (
            _make_union(built, None)
            if self.options.adds_null(schema) and built is not Any
            else built
        )

    def _ref(self, schema: dict[str, Any], keys: set[str], refs: tuple[str, ...]) -> Any:
        target = schema["$ref"]
        if (
            keys != {"$ref"}
            or not isinstance(target, str)
            or not target.startswith("#/")
            or target in refs
        ):
            raise _Inexact  # siblings, other documents, or recursion
        node = self.root
        for raw in target[2:].split("/"):
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or token not in node:
                raise _Inexact
            node = node[token]
        return self.type_of(node, (*refs, target))

    def _typed(self, schema: dict[str, Any], keys: set[str], refs: tuple[str, ...]) -> Any:
        names = schema.get("type")
        names = names if isinstance(names, list) else [names] if names is not None else None
        if not names:
            raise _Inexact
        names = [self.aliases.get(n, n) for n in names]
        if "" in names:
            if keys - {"type"}:
                raise _Inexact  # "any" with further constraints: left to the checks
            return Any
        return _union([self._member(n, schema, keys, refs) for n in names])

    def _member(
        self, name: str, schema: dict[str, Any], keys: set[str], refs: tuple[str, ...]
    ) -> Any:
        if "enum" in schema:
            if keys - {"enum", "type"}:
                raise _Inexact  # an enum with further constraints: left to the checks
            return self._enum(name, schema["enum"])
        if name == "null":
            return None
        if name == "boolean":
            return bool
        if name == "string":
            pattern = schema.get("pattern")
            return _annotated(
                str,
                min_length=schema.get("minLength"),
                max_length=schema.get("maxLength"),
                pattern=python_pattern(pattern) if isinstance(pattern, str) else pattern,
            )
        if name in ("integer", "number"):
            return self._number(name, schema)
        if name == "array":
            if "items" not in schema:
                raise _Inexact
            return _annotated(
                list[self.type_of(schema["items"], refs)],  # type: ignore[misc]
                min_length=schema.get("minItems"),
                max_length=schema.get("maxItems"),
            )
        if name == "object":
            return self._object(schema, refs)
        raise _Inexact

    def _enum(self, name: str, values: Any) -> Any:
        kind = {"string": str, "integer": int}.get(name)
        if not isinstance(values, list) or not values or kind is None:
            raise _Inexact
        if not all(type(v) is kind for v in values):
            raise _Inexact
        return Literal[tuple(values)]

    def _number(self, name: str, schema: dict[str, Any]) -> Any:
        bounds: dict[str, Any] = {}
        for keyword, meta in (
            ("minimum", "ge"),
            ("maximum", "le"),
            ("exclusiveMinimum", "gt"),
            ("exclusiveMaximum", "lt"),
            ("multipleOf", "multiple_of"),
        ):
            if keyword in schema:
                value = schema[keyword]
                if type(value) not in (int, float) or abs(value) >= _EXACT_LIMIT:
                    raise _Inexact
                if name == "integer":
                    if not float(value).is_integer():
                        raise _Inexact
                    value = int(value)
                elif keyword == "multipleOf":
                    raise _Inexact  # float remainders are not exact
                bounds[meta] = value
        return _annotated(int if name == "integer" else float, **bounds)

    def _object(self, schema: dict[str, Any], refs: tuple[str, ...]) -> Any:
        extra = schema.get("additionalProperties", True)
        properties = schema.get("properties", {})
        if not isinstance(properties, dict) or extra not in (True, False):
            raise _Inexact
        required = schema.get("required", [])
        if not isinstance(required, list) or set(required) - set(properties):
            raise _Inexact  # a required name with no property schema: left to the checks
        if not properties and extra is True:
            return dict[str, Any]
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for index, (key, sub) in enumerate(properties.items()):
            field = f"f{index}"
            rename[field] = key
            built = self.type_of(sub, refs)
            fields.append((field, built) if key in required else (field, built, None))
        fields.sort(key=lambda f: len(f) == 3)  # required fields first
        return msgspec.defstruct(
            f"Args{next(_names)}", fields, rename=rename, forbid_unknown_fields=extra is False
        )


def _union(members: list[Any]) -> Any:
    """A Union of the members. msgspec 0.22 mishandles a string pattern in a union with
    other types (a reference count goes wrong), so such a union is left to the checks."""
    if len(members) == 1:
        return members[0]
    patterned = [
        m
        for m in members
        if any(getattr(meta, "pattern", None) for meta in getattr(m, "__metadata__", ()))
    ]
    if patterned and any(m is not None and m not in patterned for m in members):
        raise _Inexact
    return _make_union(*members)


def _make_union(*members: Any) -> Any:
    """``Union[members]``: these are types built at run time, not annotations, and ``X | Y``
    is not defined for every member (``None | None`` raises; ``Union[None, None]`` is
    NoneType), so UP007's rewrite would change what is built."""
    return Union[members]  # noqa: UP007 - a runtime type, see the docstring


def _annotated(base: Any, **constraints: Any) -> Any:
    given = {k: v for k, v in constraints.items() if v is not None}
    return Annotated[base, msgspec.Meta(**given)] if given else base
