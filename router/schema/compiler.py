"""JSON Schema (draft 2020-12) compiled once, at registration, into a msgspec decoder and a
tree of precompiled checks.

A tool that arrives as JSON Schema (an OpenAI function definition, an OpenAPI operation, an
MCP server's ``inputSchema``) is validated as strictly as one written in Python. The
arguments are decoded by msgspec; each schema node becomes one Python function that checks
a decoded value and returns None, or the failure with its exact path. Regexes, enum sets,
``$ref`` targets and bounds are all resolved at compile time, never per call.

Supported keywords: the ``ASSERTIONS`` and ``APPLICATORS`` below. The ``ANNOTATIONS`` are
accepted and do not constrain (``format`` is an annotation in draft 2020-12). Any other
keyword is refused at compile time with ``SchemaError``, since silently ignoring it would
accept arguments its author meant to reject. ``$ref`` resolves JSON pointers within the
schema (``#``, ``#/$defs/...``), recursion included; references to other documents,
``$anchor``, ``$dynamicRef`` and the ``unevaluated*`` keywords are refused.

Real tool definitions use non-standard spellings (BFCL's ``"type": "dict"``); they are
accepted only under explicit ``SchemaOptions``, for example ``BFCL``.
"""

from __future__ import annotations

import re
from typing import Any, final
from urllib.parse import unquote

import msgspec

from ..errors import SchemaError
from .applicators import BUILDERS, ORDER, present
from .assertions import Check, Failure, accept, check_all, json_type, nullable, refuse
from .drafts import from_old_draft
from .pattern import python_pattern
from .structs import msgspec_type

__all__ = [
    "ANNOTATIONS",
    "APPLICATORS",
    "ASSERTIONS",
    "BFCL",
    "OPENAPI",
    "CompiledSchema",
    "Failure",
    "SchemaOptions",
    "compile_schema",
    "standard_schema",
]

ASSERTIONS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minContains",
        "maxContains",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
    }
)
APPLICATORS = frozenset(
    {
        "properties",
        "patternProperties",
        "additionalProperties",
        "propertyNames",
        "dependentSchemas",
        "items",
        "prefixItems",
        "contains",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "$ref",
    }
)
ANNOTATIONS = frozenset(
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
# Earlier drafts are read as 2020-12, their old spellings of `items`, `additionalItems`,
# `dependencies` and `$ref` siblings mapped exactly first (drafts.py); what has no exact
# equivalent (a boolean `exclusiveMinimum`, `id`) is refused, never misread.
_DIALECTS = {
    f"{scheme}://json-schema.org/{draft}/schema{hash_}"
    for scheme in ("http", "https")
    for draft in ("draft/2020-12", "draft/2019-09", "draft-07", "draft-06", "draft-04")
    for hash_ in ("", "#")
}
_TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}


class SchemaOptions(msgspec.Struct, frozen=True):
    """How to read the non-standard schemas found in the wild; the default is the standard.

    type_aliases: a non-standard type name and the standard one it means ("" for any value).
    nullable_defaults: a property whose ``default`` is null also accepts null.
    nullable_keyword: ``"nullable": true`` (OpenAPI 3.0) also accepts null.
    annotations: further keywords to accept as annotations that constrain nothing.
    extension_prefix: keywords that start with it (OpenAPI's ``x-``) are annotations too.
    """

    type_aliases: dict[str, str] = {}
    nullable_defaults: bool = False
    nullable_keyword: bool = False
    annotations: frozenset[str] = frozenset()
    extension_prefix: str = ""

    def is_annotation(self, key: str) -> bool:
        """Whether ``key`` is one of these options' extra annotations (or the nullable flag)."""
        return (
            key in self.annotations
            or bool(self.extension_prefix and key.startswith(self.extension_prefix))
            or (self.nullable_keyword and key == "nullable")
        )

    def adds_null(self, schema: dict[str, Any]) -> bool:
        """Whether these options make the schema node accept null as well."""
        return (self.nullable_defaults and "default" in schema and schema["default"] is None) or (
            self.nullable_keyword and schema.get("nullable") is True
        )


# OpenAPI 3.0's Schema Object: `nullable`, `example`, `discriminator` (a hint beside oneOf),
# `xml`, `externalDocs` and `x-` vendor extensions.
OPENAPI = SchemaOptions(
    nullable_keyword=True,
    annotations=frozenset({"example", "discriminator", "xml", "externalDocs"}),
    extension_prefix="x-",
)

# The Berkeley Function Calling Leaderboard's spellings, with its own mapping to OpenAPI,
# except that "any" is any JSON value (BFCL's checker reads it as a string).
BFCL = SchemaOptions(
    type_aliases={"dict": "object", "float": "number", "tuple": "array", "any": ""},
    nullable_defaults=True,
    annotations=frozenset({"optional"}),
)

_STANDARD = SchemaOptions()  # the default: standard JSON Schema (frozen, so safe to share)


_decoder = msgspec.json.Decoder()


@final
class CompiledSchema:
    """A schema compiled once: ``decode`` JSON text to Python values and check them.

    When msgspec can check the whole schema exactly (router.schema.structs), valid arguments
    are checked in msgspec's C code; anything it refuses goes through the precompiled
    checks, which give the verdict and the path."""

    __slots__ = ("schema", "check", "fast")

    def __init__(self, schema: Any, check: Check, fast: Any = None) -> None:
        self.schema = schema
        self.check = check
        self.fast: msgspec.json.Decoder[Any] | None = (
            None if fast is None else msgspec.json.Decoder(fast)
        )

    def validate(self, value: Any) -> Failure | None:
        """None if the decoded ``value`` is valid, else the first failure."""
        try:
            return self.check(value)
        except RecursionError:
            return Failure("the value nests too deeply to be checked")

    def decode(self, text: str | bytes) -> Any:
        """The arguments as Python values. Raises msgspec.DecodeError for text that is not
        JSON and msgspec.ValidationError, naming the path, for a value the schema refuses."""
        try:
            if self.fast is not None:
                try:
                    self.fast.decode(text)
                except msgspec.ValidationError:
                    pass  # maybe invalid, maybe only stricter than JSON Schema (1.0 for an integer)
                else:
                    return _decoder.decode(text)
            value = _decoder.decode(text)
        except RecursionError:
            raise msgspec.ValidationError(
                "the value nests too deeply to be checked - at `$`"
            ) from None
        failure = self.validate(value)
        if failure is not None:
            raise msgspec.ValidationError(f"{failure.reason} - at `{failure.where}`")
        return value


def compile_schema(schema: Any, options: SchemaOptions = _STANDARD) -> CompiledSchema:
    """Compile a JSON Schema. Raises SchemaError, naming the keyword and its location, for
    a keyword that is not supported, a malformed value, or a ``$ref`` that cannot resolve.
    A schema that declares draft 7, 6 or 4 has its old spellings mapped first (drafts.py)."""
    schema = from_old_draft(schema)
    check = _Compiler(schema, options).node(schema, "#")
    fast = msgspec_type(schema, options)
    return CompiledSchema(schema, check, fast)


def standard_schema(schema: Any, options: SchemaOptions = _STANDARD) -> Any:
    """The schema in standard JSON Schema, as a model is shown it: non-standard type names
    replaced as ``options`` reads them, their extra annotations dropped, and null added to
    the type (and enum) of a property whose default is null when ``options`` makes those
    nullable."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if options.is_annotation(key):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: standard_schema(sub, options) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [standard_schema(sub, options) for sub in value]
        elif key in _SCHEMA_VALUES:
            out[key] = standard_schema(value, options)
        elif key == "type":
            names = [
                options.type_aliases.get(n, n) if isinstance(n, str) else n
                for n in (value if isinstance(value, list) else [value])
            ]
            if "" in names:
                continue
            out[key] = names if isinstance(value, list) else names[0]
        else:
            out[key] = value
    if options.adds_null(schema) and "type" in out:
        names = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in names:
            out["type"] = [*names, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMA_VALUES = {
    "items",
    "additionalProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
}


class _Compiler:
    def __init__(self, root: Any, options: SchemaOptions) -> None:
        self.root = root
        self.options = options
        self.known = ASSERTIONS | APPLICATORS | ANNOTATIONS
        self.refs: dict[str, Check] = {}  # compiled $ref targets, by pointer, filled lazily
        self.here: set[str] = set()  # $ref targets being compiled for the current instance location
        self.base = root.get("$id", "") if isinstance(root, dict) else ""

    def node(self, schema: Any, where: str) -> Check:
        if schema is True:
            return accept
        if schema is False:
            return refuse
        if not isinstance(schema, dict):
            raise SchemaError(
                where, "", f"a schema must be an object or a boolean, not {json_type(schema)}"
            )
        for key in schema:
            if key not in self.known and not self.options.is_annotation(key):
                raise SchemaError(
                    where,
                    key,
                    "this keyword is not supported, and ignoring it would accept "
                    "values its author meant to refuse",
                )
        if "$schema" in schema and schema["$schema"] not in _DIALECTS:
            raise SchemaError(
                where, "$schema", f"{schema['$schema']!r} is not a JSON Schema draft router reads"
            )
        if "$id" in schema and where != "#":
            raise SchemaError(where, "$id", "an embedded $id (a second base URI) is not supported")
        checks = [
            c
            for c in (self._keyword(schema, key, where) for key in ORDER if present(schema, key))
            if c
        ]
        if self.options.adds_null(schema):
            return nullable(check_all(checks))
        return check_all(checks)

    def _keyword(self, schema: dict[str, Any], key: str, where: str) -> Check | None:
        return BUILDERS[key](self, schema, schema.get(key), f"{where}/{key}")

    def ref(self, target: Any, at: str) -> Check:
        if not isinstance(target, str):
            raise SchemaError(at, "$ref", "must be a string")
        pointer = target[len(self.base) :] if self.base and target.startswith(self.base) else target
        if not pointer.startswith("#"):
            raise SchemaError(
                at, "$ref", f"{target!r} refers to another document, which is not supported"
            )
        if pointer != "#" and not pointer.startswith("#/"):
            raise SchemaError(
                at, "$ref", f"{target!r} names an anchor; only JSON pointers are supported"
            )
        if pointer in self.here:
            raise SchemaError(
                at, "$ref", f"{target!r} refers back to itself without reaching a value"
            )
        if pointer not in self.refs:
            self.refs[pointer] = refuse  # a placeholder while compiling a recursive reference
            self.here.add(pointer)
            try:
                self.refs[pointer] = self.node(_resolve(self.root, pointer, at), pointer)
            finally:
                self.here.discard(pointer)
        refs = self.refs
        return lambda value: refs[pointer](value)

    def child(self, schema: Any, where: str) -> Check:
        """Compile a schema that applies to a part of the value (a property, an item)."""
        outer, self.here = self.here, set()
        try:
            return self.node(schema, where)
        finally:
            self.here = outer

    def pattern(self, value: Any, at: str) -> re.Pattern[str]:
        if not isinstance(value, str):
            raise SchemaError(at, "pattern", "must be a string")
        try:
            return re.compile(python_pattern(value))
        except (re.error, ValueError) as exc:
            raise SchemaError(
                at, "pattern", f"{value!r} cannot be checked as ECMA-262 reads it: {exc}"
            ) from exc

    def types(self, value: Any, at: str) -> tuple[str, ...]:
        """The type names ``type`` allows; () for any value (an alias that means any)."""
        names = value if isinstance(value, list) else [value]
        if not names or len(set(map(repr, names))) != len(names):
            raise SchemaError(at, "type", "an array of types must be non-empty and unique")
        out: list[str] = []
        for name in names:
            if not isinstance(name, str) or not name:
                raise SchemaError(at, "type", f"{name!r} is not a type name")
            name = self.options.type_aliases.get(name, name)
            if name == "":  # an alias for any value (BFCL's "any")
                return ()
            if name not in _TYPES:
                raise SchemaError(
                    at, "type", f"unknown type {name!r}; the types are {', '.join(sorted(_TYPES))}"
                )
            out.append(name)
        return tuple(out)


def _resolve(root: Any, pointer: str, at: str) -> Any:
    node = root
    for raw in pointer[1:].split("/")[1:] if pointer != "#" else []:
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SchemaError(at, "$ref", f"{pointer!r} does not resolve within the schema")
    return node
