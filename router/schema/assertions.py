"""The precompiled checks of router.schema's assertions (type, enum, const, bounds, lengths,
pattern, required, uniqueItems), and what every check is made of: Failure, Check, and the
part of the compiler a builder sees.

Each builder takes the compiler, the schema node, the keyword's value and its location,
and returns a check (a function of a decoded value that returns None or a Failure), or
None when the keyword constrains nothing here. Malformed keyword values raise SchemaError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, Protocol

import msgspec

from ..errors import SchemaError

__all__ = [
    "ASSERTION_BUILDERS",
    "Builder",
    "Check",
    "Compiling",
    "Failure",
    "accept",
    "check_all",
    "json_type",
    "nullable",
    "read_count",
    "refuse",
]


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
            out += (
                f"[{step}]"
                if isinstance(step, int)
                else (f".{step}" if step.isidentifier() else f"[{step!r}]")
            )
        return out


Check = Callable[[Any], "Failure | None"]


class Compiling(Protocol):
    """What a builder asks of the compiler."""

    def node(self, schema: Any, where: str) -> Check: ...

    def child(self, schema: Any, where: str) -> Check: ...

    def pattern(self, value: Any, at: str) -> re.Pattern[str]: ...

    def types(self, value: Any, at: str) -> tuple[str, ...]: ...

    def ref(self, target: Any, at: str) -> Check: ...


def accept(value: Any) -> Failure | None:
    return None


def refuse(value: Any) -> Failure | None:
    return Failure("no value is valid here (the schema is false)")


def check_all(checks: list[Check]) -> Check:
    if not checks:
        return accept
    if len(checks) == 1:
        return checks[0]

    def check(value: Any) -> Failure | None:
        for c in checks:
            failure = c(value)
            if failure is not None:
                return failure
        return None

    return check


def nullable(inner: Check) -> Check:
    return lambda value: None if value is None else inner(value)


def json_type(value: Any) -> str:
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
        return (
            "number",
            value if not (isinstance(value, float) and value.is_integer()) else int(value),
        )
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


def _type(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    names = c.types(value, at)
    if not names:
        return None
    expected = " or ".join(names)
    if len(names) == 1 and names[0] in _EXACT:
        exact = _EXACT[names[0]]
        return lambda v: (
            None if type(v) is exact else Failure(f"Expected `{expected}`, got `{json_type(v)}`")
        )
    tests = [_TYPE_TESTS[n] for n in names]

    def check(v: Any) -> Failure | None:
        for test in tests:
            if test(v):
                return None
        return Failure(f"Expected `{expected}`, got `{json_type(v)}`")

    return check


def _enum(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not isinstance(value, list):
        raise SchemaError(at, "enum", "must be an array")
    shown = ", ".join(_show(v) for v in value[:10]) + (", ..." if len(value) > 10 else "")
    allowed = {_canonical(v) for v in value}
    if all(isinstance(v, str) for v in value):
        strings = frozenset(value)
        return lambda v: (
            None if type(v) is str and v in strings else Failure(f"Expected one of {shown}")
        )
    return lambda v: None if _canonical(v) in allowed else Failure(f"Expected one of {shown}")


def _const(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    return lambda v: None if _equal(v, value) else Failure(f"Expected {_show(value)}")


def read_count(name: str, value: Any, at: str) -> int:
    """A keyword's value that must be a non-negative integer (a length, a count of items)."""
    if not _is_number(value) or value < 0 or not float(value).is_integer():
        raise SchemaError(at, name, "must be a non-negative integer")
    return int(value)


def _bound(name: str, value: Any, at: str) -> float | int:
    if not _is_number(value):
        raise SchemaError(at, name, "must be a number")
    return value  # type: ignore[no-any-return]


def _numeric(
    test: Callable[[Any, Any], bool], words: str
) -> Callable[[Compiling, dict[str, Any], Any, str], Check]:
    def build(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
        limit = _bound(at.rsplit("/", 1)[1], value, at)
        message = f"Expected a number {words} {limit}"
        return lambda v: Failure(message) if _is_number(v) and not test(v, limit) else None

    return build


def _multiple_of(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
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


def _length(name: str) -> Callable[[Compiling, dict[str, Any], Any, str], Check]:
    def build(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
        n = read_count(name, value, at)
        if name == "minLength":
            return lambda v: (
                Failure(f"Expected `str` of length >= {n}")
                if type(v) is str and len(v) < n
                else None
            )
        if name == "maxLength":
            return lambda v: (
                Failure(f"Expected `str` of length <= {n}")
                if type(v) is str and len(v) > n
                else None
            )
        if name == "minItems":
            return lambda v: (
                Failure(f"Expected `array` of length >= {n}")
                if type(v) is list and len(v) < n
                else None
            )
        if name == "maxItems":
            return lambda v: (
                Failure(f"Expected `array` of length <= {n}")
                if type(v) is list and len(v) > n
                else None
            )
        if name == "minProperties":
            return lambda v: (
                Failure(f"Expected `object` of length >= {n}")
                if type(v) is dict and len(v) < n
                else None
            )
        return lambda v: (
            Failure(f"Expected `object` of length <= {n}")
            if type(v) is dict and len(v) > n
            else None
        )

    return build


def _pattern(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    search = c.pattern(value, at).search
    message = f"Expected `str` matching regex {value!r}"
    return lambda v: Failure(message) if type(v) is str and search(v) is None else None


def _required(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
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


def _dependent_required(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check:
    if not isinstance(value, dict):
        raise SchemaError(at, "dependentRequired", "must be an object")
    pairs = [(k, tuple(v)) for k, v in value.items()]

    def check(v: Any) -> Failure | None:
        if type(v) is dict:
            for key, needed in pairs:
                if key in v:
                    for name in needed:
                        if name not in v:
                            return Failure(
                                f"Object missing required field `{name}` (required with `{key}`)"
                            )
        return None

    return check


def _unique_items(c: Compiling, schema: dict[str, Any], value: Any, at: str) -> Check | None:
    if value is not True:
        return None

    def check(v: Any) -> Failure | None:
        if type(v) is list:
            seen: dict[Any, int] = {}
            for i, item in enumerate(v):
                key = _canonical(item)
                if (
                    key in seen
                ):  # by position: a refusal never echoes the value (it may be a secret)
                    return Failure(f"Expected unique items; item {i} repeats item {seen[key]}")
                seen[key] = i
        return None

    return check


Builder = Callable[[Compiling, dict[str, Any], Any, str], "Check | None"]
ASSERTION_BUILDERS: Mapping[str, Builder] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "minimum": _numeric(lambda v, b: v >= b, ">="),
    "maximum": _numeric(lambda v, b: v <= b, "<="),
    "exclusiveMinimum": _numeric(lambda v, b: v > b, ">"),
    "exclusiveMaximum": _numeric(lambda v, b: v < b, "<"),
    "multipleOf": _multiple_of,
    "minLength": _length("minLength"),
    "maxLength": _length("maxLength"),
    "minItems": _length("minItems"),
    "maxItems": _length("maxItems"),
    "minProperties": _length("minProperties"),
    "maxProperties": _length("maxProperties"),
    "pattern": _pattern,
    "required": _required,
    "dependentRequired": _dependent_required,
    "uniqueItems": _unique_items,
}
