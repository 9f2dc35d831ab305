"""JSON Schema ``pattern``s (ECMA-262 regular expressions) as Python regular expressions.

The two dialects agree on most of what tool schemas use; where they differ, a pattern is
rewritten so that Python matches what ECMA-262 matches:

- ``$`` is the end of the input (Python's ``$`` also matches before a final newline): ``\\Z``;
- ``\\d`` and ``\\w`` are ASCII (Python's match any Unicode digit or letter): ``[0-9]`` and
  ``[A-Za-z0-9_]``, and ``\\D``, ``\\W`` their complements;
- ``\\b`` and ``\\B`` are word boundaries by that ASCII ``\\w``;
- ``\\s`` is ECMA-262's white space and line terminators (Python's also takes the ASCII
  separators 0x1C-0x1F and 0x85, and not U+FEFF), and ``\\S`` its complement;
- ``.`` matches anything but the four line terminators (Python's, anything but ``\\n``).

Features Python's ``re`` lacks (``\\p{...}`` property escapes, ``\\D`` or ``\\W`` inside a
character class) raise ValueError, which the schema compiler reports as a refusal.
Inside a class, ``[\\b]`` is a backspace in both, as written.
"""

from __future__ import annotations

__all__ = ["python_pattern"]

_SPACE = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_WORD = "[A-Za-z0-9_]"
_OUTSIDE = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "w": _WORD,
    "W": "[^A-Za-z0-9_]",
    "s": f"[{_SPACE}]",
    "S": f"[^{_SPACE}]",
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",
}
_INSIDE = {"d": "0-9", "w": "A-Za-z0-9_", "s": _SPACE}
_ANY = "[^\\n\\r\\u2028\\u2029]"


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
            if in_class and escaped in "DWS":
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
        elif char == ".":
            out.append(_ANY)
        else:
            out.append(char)
        i += 1
    return "".join(out)
