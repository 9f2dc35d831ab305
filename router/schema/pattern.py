"""JSON Schema ``pattern``s (ECMA-262 regular expressions) as Python regular expressions.

The two dialects agree on most of what tool schemas use; where they differ, a pattern is
rewritten so that Python matches what ECMA-262 matches:

- ``$`` is the end of the input (Python's ``$`` also matches before a final newline): ``\\Z``;
- ``\\d`` and ``\\w`` are ASCII (Python's match any Unicode digit or letter): ``[0-9]`` and
  ``[A-Za-z0-9_]``, and ``\\D``, ``\\W`` their complements.

Features Python's ``re`` lacks (``\\p{...}`` property escapes, ``\\D`` or ``\\W`` inside a
character class) raise ValueError, which the schema compiler reports as a refusal.
"""

from __future__ import annotations

__all__ = ["python_pattern"]

_OUTSIDE = {"d": "[0-9]", "D": "[^0-9]", "w": "[A-Za-z0-9_]", "W": "[^A-Za-z0-9_]"}
_INSIDE = {"d": "0-9", "w": "A-Za-z0-9_"}


def python_pattern(pattern: str) -> str:
    """The Python regex that matches what the ECMA-262 ``pattern`` matches.
    Raises ValueError for a feature that has no faithful translation."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped in "pP":
                raise ValueError(f"\\{escaped}{{...}} property escapes are not supported")
            if in_class and escaped in "DW":
                raise ValueError(f"\\{escaped} inside a character class is not supported")
            table = _INSIDE if in_class else _OUTSIDE
            out.append(table.get(escaped, pattern[i : i + 2]))
            i += 2
            continue
        if in_class:
            if char == "]" and out[-1] in ("[", "[^"):
                raise ValueError("an empty character class ([] or [^]) reads differently in Python")
            in_class = char != "]"
            out.append(char)
        elif char == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
            out.append("[")
        elif char == "$":
            out.append(r"\Z")
        else:
            out.append(char)
        i += 1
    return "".join(out)
