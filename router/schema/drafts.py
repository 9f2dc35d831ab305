"""Earlier drafts' spellings, mapped exactly to draft 2020-12. Pure.

A schema that declares draft 7, 6 or 4 (TypeScript MCP servers emit draft 7) may spell
three things the old way; each has an exact 2020-12 equivalent:

- ``items`` as an array of schemas is ``prefixItems``, and ``additionalItems`` beside it is
  ``items`` (beside a single ``items`` schema, or alone, ``additionalItems`` does nothing);
- ``dependencies`` is ``dependentRequired`` where the value is an array of names and
  ``dependentSchemas`` where it is a schema;
- keywords beside a ``$ref`` are ignored (only ``$ref``, and the definitions it may point
  into, are kept).

What has no exact equivalent (draft 4's boolean ``exclusiveMinimum``, ``id``) is left for
the compiler to refuse.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OLD_DRAFTS", "from_old_draft"]

OLD_DRAFTS = {
    f"{scheme}://json-schema.org/{draft}/schema{hash_}"
    for scheme in ("http", "https")
    for draft in ("draft-07", "draft-06", "draft-04")
    for hash_ in ("", "#")
}
_MAPS = {"properties", "patternProperties", "$defs", "definitions"}
_LISTS = {"allOf", "anyOf", "oneOf"}
_BESIDE_REF = ("$ref", "$schema", "definitions", "$defs")  # kept: refs may point into them
_VALUES = {"additionalProperties", "propertyNames", "contains", "not", "if", "then", "else"}


def from_old_draft(schema: Any) -> Any:
    """``schema`` with draft 7/6/4 spellings in 2020-12 form, if its root declares one of
    those drafts; otherwise ``schema`` itself."""
    if isinstance(schema, dict) and schema.get("$schema") in OLD_DRAFTS:
        return _node(schema)
    return schema


def _node(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return {
            k: _sub(k, v)
            for k, v in schema.items()
            if k in ("$ref", "$schema", "definitions", "$defs")
        }
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "items" and isinstance(value, list):
            out["prefixItems"] = [_node(s) for s in value]
            if "additionalItems" in schema:
                out["items"] = _node(schema["additionalItems"])
        elif key == "additionalItems":
            continue  # only meaningful beside an array of items, handled there
        elif key == "dependencies" and isinstance(value, dict):
            for name, dependency in value.items():
                if isinstance(dependency, list):
                    out.setdefault("dependentRequired", {})[name] = dependency
                else:
                    out.setdefault("dependentSchemas", {})[name] = _node(dependency)
        else:
            out[key] = _sub(key, value)
    return out


def _sub(key: str, value: Any) -> Any:
    if key in _MAPS and isinstance(value, dict):
        return {name: _node(s) for name, s in value.items()}
    if key in _LISTS and isinstance(value, list):
        return [_node(s) for s in value]
    if key in _VALUES or key == "items":
        return _node(value)
    return value
