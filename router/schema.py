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

import math
from fractions import Fraction
import re
from collections.abc import Callable, Mapping
from typing import Any, final
from urllib.parse import unquote

import msgspec

from .errors import SchemaError
from .pattern import python_pattern
from .schema_types import msgspec_type

__all__ = [
    "ANNOTATIONS", "APPLICATORS", "ASSERTIONS", "BFCL", "CompiledSchema", "Failure", "SchemaOptions", "compile_schema",
    "standard_schema",
]

ASSERTIONS = frozenset({
    "type", "enum", "const", "required", "minProperties", "maxProperties", "dependentRequired",
    "minItems", "maxItems", "uniqueItems", "minContains", "maxContains",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern",
})
APPLICATORS = frozenset({
    "properties", "patternProperties", "additionalProperties", "propertyNames", "dependentSchemas",
    "items", "prefixItems", "contains", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref",
})
ANNOTATIONS = frozenset({
    "$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly", "format",
})
_DIALECTS = {"https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2020-12/schema#"}
_TYPES = {"null", "boolean", "integer", "number", "string", "array", "object"}


class SchemaOptions(msgspec.Struct, frozen=True):
    """How to read the non-standard schemas found in the wild; the default is the standard.

    type_aliases: a non-standard type name and the standard one it means ("" for any value).
    nullable_defaults: a property whose ``default`` is null also accepts null.
    annotations: further keywords to accept as annotations that constrain nothing.
    """

    type_aliases: dict[str, str] = {}
    nullable_defaults: bool = False
    annotations: frozenset[str] = frozenset()


# The Berkeley Function Calling Leaderboard's spellings, with its own mapping to OpenAPI,
# except that "any" is any JSON value (BFCL's checker reads it as a string).
BFCL = SchemaOptions(
    type_aliases={"dict": "object", "float": "number", "tuple": "array", "any": ""},
    nullable_defaults=True,
    annotations=frozenset({"optional"}),
)


class Failure:
    """Why a value fails: the reason, and the path from the root (built on the way out)."""

    __slots__ = ("reason", "path")

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str | int] = []

    def at(self, step: str | int) -> Failure:
        self.path.append(step)
        return self

    @property
    def where(self) -> str:
        out = "$"
        for step in reversed(self.path):
            out += f"[{step}]" if isinstance(step, int) else (f".{step}" if step.isidentifier() else f"[{step!r}]")
        return out


Check = Callable[[Any], "Failure | None"]
_decoder = msgspec.json.Decoder()


@final
class CompiledSchema:
    """A schema compiled once: ``decode`` JSON text to Python values and check them.

    When msgspec can check the whole schema exactly (router.schema_types), valid arguments
    are checked in msgspec's C code; anything it refuses goes through the precompiled
    checks, which give the verdict and the path."""

    __slots__ = ("schema", "check", "fast")

    def __init__(self, schema: Any, check: Check, fast: Any = None) -> None:
        self.schema = schema
        self.check = check
        self.fast: msgspec.json.Decoder[Any] | None = None if fast is None else msgspec.json.Decoder(fast)

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
            raise msgspec.ValidationError("the value nests too deeply to be checked - at `$`") from None
        failure = self.validate(value)
        if failure is not None:
            raise msgspec.ValidationError(f"{failure.reason} - at `{failure.where}`")
        return value


def compile_schema(schema: Any, options: SchemaOptions = SchemaOptions()) -> CompiledSchema:
    """Compile a JSON Schema. Raises SchemaError, naming the keyword and its location, for
    a keyword that is not supported, a malformed value, or a ``$ref`` that cannot resolve."""
    check = _Compiler(schema, options).node(schema, "#")
    fast = msgspec_type(schema, schema, options.type_aliases, options.annotations, options.nullable_defaults)
    return CompiledSchema(schema, check, fast)


def standard_schema(schema: Any, options: SchemaOptions = SchemaOptions()) -> Any:
    """The schema in standard JSON Schema, as a model is shown it: non-standard type names
    replaced as ``options`` reads them, their extra annotations dropped, and null added to
    the type (and enum) of a property whose default is null when ``options`` makes those
    nullable."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in options.annotations:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: standard_schema(sub, options) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [standard_schema(sub, options) for sub in value]
        elif key in _SCHEMA_VALUES:
            out[key] = standard_schema(value, options)
        elif key == "type":
            names = [options.type_aliases.get(n, n) if isinstance(n, str) else n
                     for n in (value if isinstance(value, list) else [value])]
            if "" in names:
                continue
            out[key] = names if isinstance(value, list) else names[0]
        else:
            out[key] = value
    if options.nullable_defaults and "default" in out and out["default"] is None and "type" in out:
        names = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in names:
            out["type"] = [*names, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMA_VALUES = {"items", "additionalProperties", "propertyNames", "contains", "not", "if", "then", "else"}


class _Compiler:
    def __init__(self, root: Any, options: SchemaOptions) -> None:
        self.root = root
        self.options = options
        self.known = ASSERTIONS | APPLICATORS | ANNOTATIONS | options.annotations
        self.refs: dict[str, Check] = {}  # compiled $ref targets, by pointer, filled lazily
        self.here: set[str] = set()  # $ref targets being compiled for the current instance location
        self.base = root.get("$id", "") if isinstance(root, dict) else ""

    def node(self, schema: Any, where: str) -> Check:
        if schema is True:
            return _accept
        if schema is False:
            return _refuse
        if not isinstance(schema, dict):
            raise SchemaError(where, "", f"a schema must be an object or a boolean, not {_json_type(schema)}")
        for key in schema:
            if key not in self.known:
                raise SchemaError(where, key, "this keyword is not supported, and ignoring it would accept "
                                  "values its author meant to refuse")
        if "$schema" in schema and schema["$schema"] not in _DIALECTS:
            raise SchemaError(where, "$schema", f"only draft 2020-12 is supported, not {schema['$schema']!r}")
        if "$id" in schema and where != "#":
            raise SchemaError(where, "$id", "an embedded $id (a second base URI) is not supported")
        checks = [c for c in (self._keyword(schema, key, where) for key in _ORDER if _present(schema, key)) if c]
        if self.options.nullable_defaults and "default" in schema and schema["default"] is None:
            return _nullable(_all(checks))
        return _all(checks)

    def _keyword(self, schema: dict[str, Any], key: str, where: str) -> Check | None:
        return _BUILDERS[key](self, schema, schema.get(key), f"{where}/{key}")

    def ref(self, target: Any, at: str) -> Check:
        if not isinstance(target, str):
            raise SchemaError(at, "$ref", "must be a string")
        pointer = target[len(self.base):] if self.base and target.startswith(self.base) else target
        if not pointer.startswith("#"):
            raise SchemaError(at, "$ref", f"{target!r} refers to another document, which is not supported")
        if pointer != "#" and not pointer.startswith("#/"):
            raise SchemaError(at, "$ref", f"{target!r} names an anchor; only JSON pointers are supported")
        if pointer in self.here:
            raise SchemaError(at, "$ref", f"{target!r} refers back to itself without reaching a value")
        if pointer not in self.refs:
            self.refs[pointer] = _refuse  # a placeholder while compiling a recursive reference
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
            raise SchemaError(at, "pattern", f"{value!r} cannot be checked as ECMA-262 reads it: {exc}") from exc

    def types(self, value: Any, at: str) -> tuple[str, ...]:
        names = value if isinstance(value, list) else [value]
        out: list[str] = []
        for name in names:
            if not isinstance(name, str):
                raise SchemaError(at, "type", f"{name!r} is not a type name")
            name = self.options.type_aliases.get(name, name)
            if name == "":
                return ()
            if name not in _TYPES:
                raise SchemaError(at, "type", f"unknown type {name!r}; the types are {', '.join(sorted(_TYPES))}")
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


# --- checks: each returns None or a Failure ----------------------------------------------


def _accept(value: Any) -> Failure | None:
    return None


def _refuse(value: Any) -> Failure | None:
    return Failure("no value is valid here (the schema is false)")


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _accept
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> Failure | None:
        for c in checks:
            failure = c(value)
            if failure is not None:
                return failure
        return None

    return check


def _nullable(inner: Check) -> Check:
    return lambda value: None if value is None else inner(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value is not True and value is not False


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1; arrays and objects compared deeply."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _canonical(value: Any) -> Any:
    """A hashable form in which JSON-equal values are equal (for sets)."""
    if value is True or value is False or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("number", value if not (isinstance(value, float) and value.is_integer()) else int(value))
    if isinstance(value, list):
        return ("array", tuple(_canonical(v) for v in value))
    return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))


def _show(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: v is True or v is False,
    "integer": lambda v: (type(v) is int) or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) is int or type(v) is float,
    "string": lambda v: type(v) is str,
    "array": lambda v: type(v) is list,
    "object": lambda v: type(v) is dict,
}
_EXACT = {"string": str, "array": list, "object": dict, "boolean": bool}


def _type(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    names = c.types(value, at)
    if not names:
        return None
    expected = " or ".join(names)
    if len(names) == 1 and names[0] in _EXACT:
        exact = _EXACT[names[0]]
        return lambda v: None if type(v) is exact else Failure(f"Expected `{expected}`, got `{_json_type(v)}`")
    tests = [_TYPE_TESTS[n] for n in names]

    def check(v: Any) -> Failure | None:
        for test in tests:
            if test(v):
                return None
        return Failure(f"Expected `{expected}`, got `{_json_type(v)}`")

    return check


def _enum(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not isinstance(value, list):
        raise SchemaError(at, "enum", "must be an array")
    shown = ", ".join(_show(v) for v in value[:10]) + (", ..." if len(value) > 10 else "")
    allowed = {_canonical(v) for v in value}
    if all(isinstance(v, str) for v in value):
        strings = frozenset(value)
        return lambda v: None if type(v) is str and v in strings else Failure(f"Expected one of {shown}")
    return lambda v: None if _canonical(v) in allowed else Failure(f"Expected one of {shown}")


def _const(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    return lambda v: None if _equal(v, value) else Failure(f"Expected {_show(value)}")


def _count(name: str, value: Any, at: str) -> int:
    if not _is_number(value) or value < 0 or not float(value).is_integer():
        raise SchemaError(at, name, "must be a non-negative integer")
    return int(value)


def _bound(name: str, value: Any, at: str) -> float | int:
    if not _is_number(value):
        raise SchemaError(at, name, "must be a number")
    return value  # type: ignore[no-any-return]


def _numeric(test: Callable[[Any, Any], bool], words: str) -> Callable[[_Compiler, dict[str, Any], Any, str], Check]:
    def build(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
        limit = _bound(at.rsplit("/", 1)[1], value, at)
        message = f"Expected a number {words} {limit}"
        return lambda v: Failure(message) if _is_number(v) and not test(v, limit) else None

    return build


def _multiple_of(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not _is_number(value) or value <= 0:
        raise SchemaError(at, "multipleOf", "must be a number greater than 0")
    divisor = Fraction(repr(value))  # the decimal the schema wrote, exactly

    def check(v: Any) -> Failure | None:
        if not _is_number(v):
            return None
        if type(v) is int and type(value) is int:
            ok = v % value == 0
        elif isinstance(v, float) and not math.isfinite(v):
            ok = False
        else:
            ok = (Fraction(repr(v)) / divisor).denominator == 1
        return None if ok else Failure(f"Expected a multiple of {value}")

    return check


def _length(name: str) -> Callable[[_Compiler, dict[str, Any], Any, str], Check]:
    def build(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
        n = _count(name, value, at)
        if name == "minLength":
            return lambda v: Failure(f"Expected `str` of length >= {n}") if type(v) is str and len(v) < n else None
        if name == "maxLength":
            return lambda v: Failure(f"Expected `str` of length <= {n}") if type(v) is str and len(v) > n else None
        if name == "minItems":
            return lambda v: Failure(f"Expected `array` of length >= {n}") if type(v) is list and len(v) < n else None
        if name == "maxItems":
            return lambda v: Failure(f"Expected `array` of length <= {n}") if type(v) is list and len(v) > n else None
        if name == "minProperties":
            return lambda v: Failure(f"Expected `object` of length >= {n}") if type(v) is dict and len(v) < n else None
        return lambda v: Failure(f"Expected `object` of length <= {n}") if type(v) is dict and len(v) > n else None

    return build


def _pattern(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    search = c.pattern(value, at).search
    message = f"Expected `str` matching regex {value!r}"
    return lambda v: Failure(message) if type(v) is str and search(v) is None else None


def _required(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise SchemaError(at, "required", "must be an array of strings")
    if not value:
        return None
    names = tuple(value)

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for name in names:
                if name not in v:
                    return Failure(f"Object missing required field `{name}`")
        return None

    return check


def _dependent_required(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not isinstance(value, dict):
        raise SchemaError(at, "dependentRequired", "must be an object")
    pairs = [(k, tuple(v)) for k, v in value.items()]

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for key, needed in pairs:
                if key in v:
                    for name in needed:
                        if name not in v:
                            return Failure(f"Object missing required field `{name}` (required with `{key}`)")
        return None

    return check


def _unique_items(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    if value is not True:
        return None

    def check(v: Any) -> Failure | None:
        if type(v) is list:
            seen: set[Any] = set()
            for item in v:
                key = _canonical(item)
                if key in seen:
                    return Failure(f"Expected unique items; {_show(item)} is repeated")
                seen.add(key)
        return None

    return check


def _object_applicators(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    """properties, patternProperties and additionalProperties, compiled together because
    additionalProperties applies to the names the other two do not match."""
    where = at.rsplit("/", 1)[0]
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(f"{where}/properties", "properties", "must be an object")
    compiled = {name: c.child(sub, f"{where}/properties/{_escape(name)}") for name, sub in props.items()}
    patterns = schema.get("patternProperties", {})
    if not isinstance(patterns, dict):
        raise SchemaError(f"{where}/patternProperties", "patternProperties", "must be an object")
    by_pattern = [
        (c.pattern(p, f"{where}/patternProperties").search, c.child(sub, f"{where}/patternProperties/{_escape(p)}"))
        for p, sub in patterns.items()
    ]
    extra = c.child(schema["additionalProperties"], f"{where}/additionalProperties") \
        if "additionalProperties" in schema else None
    closed = schema.get("additionalProperties") is False
    if not by_pattern and extra is None:
        items = tuple(compiled.items())

        def check_properties(v: Any) -> Failure | None:
            if type(v) is dict:
                for name, sub in items:
                    if name in v:
                        failure = sub(v[name])
                        if failure is not None:
                            return failure.at(name)
            return None

        return check_properties

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


def _property_names(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.child(value, at)

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for name in v:
                failure = sub(name)
                if failure is not None:
                    return Failure(f"property name {name!r}: {failure.reason}")
        return None

    return check


def _dependent_schemas(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
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


def _array_applicators(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    """prefixItems and items, compiled together: items applies after the prefix."""
    where = at.rsplit("/", 1)[0]
    prefix_schemas = schema.get("prefixItems", [])
    if not isinstance(prefix_schemas, list):
        raise SchemaError(f"{where}/prefixItems", "prefixItems", "must be an array of schemas")
    prefix = [c.child(sub, f"{where}/prefixItems/{i}") for i, sub in enumerate(prefix_schemas)]
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


def _contains(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.child(value, at)
    where = at.rsplit("/", 1)[0]
    least = _count("minContains", schema["minContains"], f"{where}/minContains") if "minContains" in schema else 1
    most = _count("maxContains", schema["maxContains"], f"{where}/maxContains") if "maxContains" in schema else None

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


def _schemas(c: _Compiler, value: Any, at: str, name: str) -> list[Check]:
    if not isinstance(value, list) or not value:
        raise SchemaError(at, name, "must be a non-empty array of schemas")
    return [c.node(sub, f"{at}/{i}") for i, sub in enumerate(value)]


def _all_of(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    return _all(_schemas(c, value, at, "allOf"))


def _any_of(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
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


def _one_of(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    subs = _schemas(c, value, at, "oneOf")

    def check(v: Any) -> Failure | None:
        matched = sum(1 for sub in subs if sub(v) is None)
        if matched == 1:
            return None
        return Failure(f"Expected a value matching exactly one of `oneOf`, matched {matched}")

    return check


def _not(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    sub = c.node(value, at)
    return lambda v: Failure("Expected a value that does not match `not`") if sub(v) is None else None


def _if(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    where = at.rsplit("/", 1)[0]
    condition = c.node(value, at)
    then = c.node(schema["then"], f"{where}/then") if "then" in schema else _accept
    otherwise = c.node(schema["else"], f"{where}/else") if "else" in schema else _accept
    return lambda v: then(v) if condition(v) is None else otherwise(v)


def _then_else(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    if "if" not in schema:
        c.node(value, at)  # applies to nothing without `if`, but a refused keyword inside is still refused
    return None


def _ref(c: _Compiler, schema: dict[str, Any], value: Any, at: str) -> Check:
    return c.ref(value, at)


def _present(schema: dict[str, Any], key: str) -> bool:
    """Whether a keyword (or, for a principal, one of its companions) is in the schema."""
    return key in schema or any(companion in schema for companion in _COMPANIONS.get(key, ()))


_Builder = Callable[[_Compiler, dict[str, Any], Any, str], "Check | None"]
_BUILDERS: Mapping[str, _Builder] = {
    "type": _type, "enum": _enum, "const": _const,
    "minimum": _numeric(lambda v, b: v >= b, ">="), "maximum": _numeric(lambda v, b: v <= b, "<="),
    "exclusiveMinimum": _numeric(lambda v, b: v > b, ">"), "exclusiveMaximum": _numeric(lambda v, b: v < b, "<"),
    "multipleOf": _multiple_of,
    "minLength": _length("minLength"), "maxLength": _length("maxLength"),
    "minItems": _length("minItems"), "maxItems": _length("maxItems"),
    "minProperties": _length("minProperties"), "maxProperties": _length("maxProperties"),
    "pattern": _pattern, "required": _required, "dependentRequired": _dependent_required,
    "uniqueItems": _unique_items,
    "properties": _object_applicators, "propertyNames": _property_names, "dependentSchemas": _dependent_schemas,
    "items": _array_applicators, "contains": _contains,
    "allOf": _all_of, "anyOf": _any_of, "oneOf": _one_of, "not": _not, "if": _if,
    "then": _then_else, "else": _then_else, "$ref": _ref,
}
# Keywords compiled by the principal they qualify: additionalProperties applies to the names
# that properties and patternProperties leave, items to what prefixItems leaves.
_COMPANIONS = {"properties": ("patternProperties", "additionalProperties"), "items": ("prefixItems",)}
# The order checks run in: cheap type tests first; companions (and minContains, maxContains,
# then, else) are compiled with their principal.
_ORDER = (
    "type", "enum", "const", "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "dependentRequired", "properties", "propertyNames", "dependentSchemas",
    "items", "contains", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref",
)
