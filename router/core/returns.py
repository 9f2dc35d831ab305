"""What a tool returns: ``ToolOutput`` for a result that also reports its cost, and the
check of a result against the tool's declared return type, compiled when the tool is."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, get_type_hints

import msgspec

from ..errors import ConfigError
from ..schema.compiler import CompiledSchema, SchemaOptions, compile_schema
from .events import Usage

__all__ = ["ToolOutput", "result_check", "where_of"]


class ToolOutput(msgspec.Struct, frozen=True):
    """A result that also reports what producing it cost (a child agent's tokens and cost
    count against the parent run's budgets) and the child run that produced it."""

    result: Any
    usage: Usage = Usage()
    cost_nusd: int = 0
    child_run_id: str = ""
    final: bool = False  # the result is the run's answer (a handoff): the run ends with it


def result_check(
    fn: Callable[..., Any], name: str, returns: dict[str, Any] | None, options: SchemaOptions
) -> Callable[[Any, str], str | None]:
    """What checks a tool's encoded result: its ``returns`` schema, else its return
    annotation (nothing without either, or for a ToolOutput, whose result is free)."""
    decoder: CompiledSchema | msgspec.json.Decoder[Any]
    if returns is not None:
        decoder = compile_schema(returns, options)
    else:
        try:
            annotation = get_type_hints(fn).get("return", Any)
        except Exception as exc:
            raise ConfigError(f"tool {name!r}: cannot resolve its return type: {exc}") from exc
        if annotation in (Any, object, ToolOutput) or _mentions(annotation, ToolOutput):
            return _anything
        simple = _SIMPLE.get(annotation)
        if simple is not None:  # on every call of most tools: a type test, no decoding
            expected = annotation.__name__

            def of_type(value: Any, result: str) -> str | None:
                if type(value) in simple:
                    return None
                return f"Expected `{expected}`, got `{type(value).__name__}` at $"

            return of_type
        try:
            decoder = msgspec.json.Decoder(annotation)
        except TypeError as exc:
            raise ConfigError(
                f"tool {name!r}: its return type {annotation!r} cannot be checked ({exc}); "
                "declare returns= as a JSON Schema, or annotate -> Any"
            ) from exc

    def check(value: Any, result: str) -> str | None:
        try:
            decoder.decode(result)
        except msgspec.ValidationError as exc:
            path, reason = where_of(str(exc))
            return f"{reason.rstrip(' -')} at {path}"
        return None

    return check


def _anything(value: Any, result: str) -> str | None:
    return None


# Return annotations checked by the value's exact type (bool is not an int in JSON).
_SIMPLE: dict[Any, tuple[type, ...]] = {
    int: (int,),
    str: (str,),
    bool: (bool,),
    float: (float, int),
    type(None): (type(None),),
    None: (type(None),),
}


def _mentions(annotation: Any, kind: type) -> bool:
    return kind in getattr(annotation, "__args__", ())


_AT = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"(?:missing required|contains unknown) field `([^`]*)`")


def where_of(message: str) -> tuple[str, str]:
    """Split a msgspec validation message into (path, reason)."""
    match = _AT.search(message)
    path = match.group(1) if match else "$"
    reason = message[: match.start()] if match else message
    field = _FIELD.search(reason)
    if field:
        path = f"{path}.{field.group(1)}"
    return path, reason
