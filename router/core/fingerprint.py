"""A fingerprint of the code that decides: a resumed run can tell that its tools changed.

``code_fingerprint(fn)`` is a hex sha256 over a canonical tree built from ``fn``: its
bytecode, with NOP and EXTENDED_ARG dropped and jump targets and the exception table
counted in instructions rather than byte offsets; the constants it loads, nested code
objects included; its names, argument counts and flags; its defaults and kw-defaults; and
the code of the callables its closure cells hold. Values written in the code (constants,
defaults) count by value when they are plain and immutable (None, bool, int, float,
complex, str, bytes, and tuples and frozensets of them), with sets sorted so that
PYTHONHASHSEED cannot move them; a list, dict, set or bytearray counts by its type only, as
it is state the code keeps, which changes as the code runs. Values bound at run time (what
a closure cell holds that is not callable, a partial's arguments) count by value when they
are numbers, flags or None (a threshold, a number of rounds: they decide) and by their type
otherwise (a path, a URL, a client: they say where the code runs, not what it decides);
callables count by their own fingerprint, and a callable met again on the way down (a
recursive closure) counts as a marker; any other object counts by its type's module and
qualified name.

Not seen: line numbers, file and function names, positions, comments, whitespace,
annotations and docstrings (a docstring is text for people, so editing one is not a code
change), so moving or reformatting a function keeps its fingerprint. Module globals, the
functions the code calls and the libraries they live in are seen by name only: a changed
helper or an upgraded third-party library is not detected. Bytecode differs across Python
versions, so upgrading Python (even a patch release may) changes every fingerprint.

Unwrapping: ``functools.partial`` counts its function, args and keywords; a bound method
counts its ``__func__`` (not the state of ``__self__``); an object with ``__call__``
counts its class and the ``__call__`` it resolves to (not its instance attributes); a
class counts its bases by name and, sorted by name, its own methods, properties and plain
class attributes; a builtin or C function counts its module and qualified name. A
function decorated with ``functools.wraps`` counts both the wrapper and ``__wrapped__``,
so a change to the decorator or to the function it wraps is seen.
"""

from __future__ import annotations

import dis
import enum
import functools
import types
from bisect import bisect_left
from collections.abc import Callable
from hashlib import sha256
from typing import Any, TypeAlias

__all__ = ["code_fingerprint"]

_Tree: TypeAlias = "str | bytes | int | None | tuple[_Tree, ...]"

_DROPPED = frozenset({"NOP", "EXTENDED_ARG", "CACHE"})  # line bookkeeping and arg prefixes
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_HAS_DOCSTRING = 0x4000000  # CO_HAS_DOCSTRING (3.14+): a docstring is not a code change
_ATOMS = (type(None), bool, float, complex, type(Ellipsis))
_MUTABLE = (list, dict, set, bytearray)
_BUILTINS = (
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """Return a hex sha256 of the code that decides what ``fn`` does.

    Equal across processes and PYTHONHASHSEED values for the same code under the same
    Python version; see the module docstring for what it sees and what it does not.
    """
    return sha256(repr(_encode(fn, frozenset())).encode()).hexdigest()


def _encode(value: object, path: frozenset[int]) -> _Tree:
    if isinstance(value, (str, bytes)) and type(value) in (str, bytes):
        return (type(value).__name__, value)
    if type(value) is int:
        return ("int", hex(value))  # hex: repr refuses ints past 4300 digits
    if type(value) in _ATOMS:
        return (type(value).__name__, repr(value))
    if isinstance(value, enum.Enum):
        return ("enum", _name(type(value)), value.name)
    if id(value) in path:  # id() guards the walk only, it never reaches the hash
        return ("cycle",)
    path = path | {id(value)}
    if isinstance(value, _MUTABLE):  # state the code keeps, not code: it may change as it runs
        return ("mutable", _name(type(value)))
    if isinstance(value, tuple):
        return (type(value).__name__, *(_encode(item, path) for item in value))
    if isinstance(value, frozenset):
        return ("set", *sorted((_encode(item, path) for item in value), key=repr))
    if isinstance(value, types.CodeType):
        return _encode_code(value, path)
    return _encode_callable(value, path)


def _encode_callable(value: object, path: frozenset[int]) -> _Tree:
    if isinstance(value, types.FunctionType):
        return ("function", _encode_function(value, path), _encode_wrapped(value, path))
    if isinstance(value, functools.partial):
        bound = tuple(_encode_bound(a, path) for a in value.args)
        keywords = tuple(sorted((k, _encode_bound(v, path)) for k, v in value.keywords.items()))
        return ("partial", _encode(value.func, path), bound, keywords)
    if isinstance(value, types.MethodType):
        return ("method", _encode(value.__func__, path))
    if isinstance(value, type):
        return ("class", _encode_class(value, path), _encode_wrapped(value, path))
    if isinstance(value, _BUILTINS):
        return ("builtin", getattr(value, "__module__", None) or "", value.__qualname__)
    if callable(value):
        kind = type(value)
        call = _encode(kind.__call__, path)
        return ("callable", _encode(kind, path), call, _encode_wrapped(value, path))
    return ("object", _name(type(value)))


def _encode_bound(value: object, path: frozenset[int]) -> _Tree:
    """A value bound at run time (a closure cell, a partial's argument): the code of a
    callable, a number or flag by value (a threshold, a number of rounds decides), the type
    of anything else (a path, a URL, a client: where the code runs, not what it decides)."""
    if callable(value):
        return _encode(value, path)
    if type(value) in _ATOMS or type(value) is int:
        return _encode(value, path)
    return ("value", _name(type(value)))


def _encode_options(options: dict[str, Any] | None, path: frozenset[int]) -> _Tree:
    """Keyword defaults or a partial's keywords: configuration, by name and value."""
    return tuple(sorted(((k, _encode(v, path)) for k, v in (options or {}).items()), key=repr))


def _encode_wrapped(value: object, path: frozenset[int]) -> _Tree:
    wrapped = getattr(value, "__wrapped__", None)  # set by functools.wraps
    return None if wrapped is None else _encode(wrapped, path)


def _encode_function(fn: types.FunctionType, path: frozenset[int]) -> _Tree:
    cells: list[_Tree] = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_encode_bound(cell.cell_contents, path))
        except ValueError:  # a cell not yet filled
            cells.append(("empty",))
    return (
        _encode_code(fn.__code__, path),
        _encode(fn.__defaults__, path),
        _encode_options(fn.__kwdefaults__, path),
        tuple(cells),
    )


def _encode_code(code: types.CodeType, path: frozenset[int]) -> _Tree:
    bytecode = dis.Bytecode(code)
    kept = [ins for ins in bytecode if ins.opname not in _DROPPED]
    offsets = [ins.offset for ins in kept]
    loaded: set[int] = set()
    ops: list[_Tree] = []
    for ins in kept:
        arg: _Tree = ins.arg
        if ins.opcode in dis.hasconst and ins.arg is not None:
            loaded.add(ins.arg)  # by value, so a dropped docstring shifts no index
            arg = _encode(code.co_consts[ins.arg], path)
        elif ins.opcode in _JUMPS:
            arg = bisect_left(offsets, ins.argval)
        ops.append((ins.opname, arg))
    entries = bytecode.exception_entries  # type: ignore[attr-defined]  # 3.11+, undocumented
    table = tuple(
        (*(bisect_left(offsets, at) for at in (e.start, e.end, e.target)), e.depth, e.lasti)
        for e in entries
    )
    # Constants no instruction loads: index 0 is the docstring slot; others are kept.
    unloaded = [c for i, c in enumerate(code.co_consts) if i and i not in loaded]
    names = (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)
    counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)
    flags = code.co_flags & ~_HAS_DOCSTRING
    return ("code", tuple(ops), table, _encode(unloaded, path), names, counts, flags)


def _encode_class(cls: type, path: frozenset[int]) -> _Tree:
    if cls.__module__ == "builtins":
        return _name(cls)
    members: list[_Tree] = []
    for name, member in sorted(vars(cls).items()):
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        dunder = name.startswith("__") and name.endswith("__")
        if dunder and not isinstance(member, (types.FunctionType, property)):
            continue  # __module__, __doc__, __dict__, __slots__ and the like do not decide
        if isinstance(member, property):
            member = (member.fget, member.fset, member.fdel)
        members.append((name, _encode(member, path)))
    return (_name(cls), tuple(_name(base) for base in cls.__bases__), tuple(members))


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"
