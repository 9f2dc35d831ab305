"""Tools: declared once, validated against precompiled msgspec types.

A tool is declared from a typed Python function (sync or async) whose parameters become
a msgspec Struct, from a function taking one msgspec Struct, or from a JSON Schema
(``parameters=``) compiled by router.schema, whose function takes the arguments as a dict.
The decoder and the JSON Schema shown to the model are built at registration, never per
call. Deciding a proposed call is pure: it returns the event that records the decision
(started, rejected, denied).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, final, get_type_hints, overload

import msgspec

from ..errors import ConfigError, SchemaError
from ..schema.compiler import CompiledSchema, SchemaOptions, compile_schema, standard_schema
from .access import Policy
from .events import (
    Message,
    Principal,
    ToolCall,
    ToolCallDenied,
    ToolCallRejected,
    ToolStarted,
)
from .limits import Budget, Meter
from .protocols import ProposedCall
from .redaction import Redaction
from .returns import ToolOutput, result_check, where_of

__all__ = [
    "Retry",
    "Tool",
    "ToolContext",
    "ToolOutput",
    "Tools",
    "encode_result",
    "record_calls",
    "tool",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_encoder = msgspec.json.Encoder(order="deterministic")


class ToolContext(msgspec.Struct, frozen=True):
    """What a tool may ask for by declaring a parameter of this type (it is not shown to
    the model): the run and call it serves, and who the run acts for."""

    run_id: str
    call_id: str
    principal: Principal
    messages: tuple[Message, ...] = ()  # the conversation so far, for a handoff
    budget: Budget = Budget()  # what the run has left for this call's child runs
    meter: Meter | None = None  # takes what this call's child runs spent
    redaction: Redaction | None = None  # the run's policy, which its child runs inherit
    runtime: Any = None  # the run's Runtime (router.run.runtime), on which its child runs execute


class Retry(msgspec.Struct, frozen=True):
    """A deterministic backoff schedule: no jitter, so a replay waits the same way.

    Attempt n (n >= 2) waits ``min(base_delay_s * factor ** (n - 2), max_delay_s)``.
    """

    attempts: int = 1
    base_delay_s: float = 0.1
    factor: float = 2.0
    max_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.factor < 1 or self.max_delay_s < 0:
            raise ConfigError(f"invalid retry schedule {self!r}")

    def delay_before(self, attempt: int) -> float:
        return min(self.base_delay_s * self.factor ** (attempt - 2), self.max_delay_s)


@final
class Tool:
    """A registered tool. Build one with the ``tool`` decorator."""

    __slots__ = (
        "name",
        "description",
        "fn",
        "args_type",
        "takes_struct",
        "context_param",
        "is_async",
        "inline",
        "idempotent",
        "permissions",
        "timeout_s",
        "retry",
        "max_argument_bytes",
        "max_result_bytes",
        "check_result",
        "decoder",
        "schema",
        "inline_once",
        "positional",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        permissions: Iterable[str] = (),
        idempotent: bool = False,
        timeout_s: float | None = None,
        retry: Retry | None = None,
        inline: bool = False,
        max_argument_bytes: int = 65_536,
        parameters: dict[str, Any] | None = None,
        schema_options: SchemaOptions | None = None,
        max_result_bytes: int = 1_048_576,
        returns: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        permissions = _checked(
            self.name, permissions, timeout_s, retry, (max_argument_bytes, max_result_bytes)
        )
        self.description = description or inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0]
        self.is_async = inspect.iscoroutinefunction(fn)
        self.inline = inline
        self.idempotent = idempotent
        self.permissions = frozenset(permissions)
        self.timeout_s = timeout_s
        self.retry = retry or Retry()
        self.inline_once = inline and not self.is_async and self.retry.attempts == 1
        self.max_argument_bytes, self.max_result_bytes = max_argument_bytes, max_result_bytes
        self.decoder: msgspec.json.Decoder[Any] | CompiledSchema
        self.args_type: type[Any]
        options = schema_options or SchemaOptions()
        if parameters is not None:
            self.args_type, self.takes_struct = dict, True
            self.context_param = _context_param(fn, self.name)
            self.decoder, parameters = _compile_parameters(self.name, parameters, options)
        else:
            struct, self.takes_struct, self.context_param = _args_type(fn, self.name)
            self.args_type = struct
            self.decoder, parameters = _build_decoder(self.name, struct)
        self.check_result = result_check(fn, self.name, returns, options)
        self.positional = (
            not self.takes_struct
            and not self.context_param
            and _takes_fields_in_order(fn, self.args_type)
        )
        function = {"name": self.name, "description": self.description, "parameters": parameters}
        self.schema: dict[str, Any] = {"type": "function", "function": function}

    def call(self, args: Any, context: ToolContext | None = None) -> Any:
        """Invoke the function with decoded arguments (awaitable if the tool is async)."""
        if self.positional:
            return self.fn(*msgspec.structs.astuple(args))
        if self.takes_struct:
            return self.fn(args, **({self.context_param: context} if self.context_param else {}))
        kwargs = msgspec.structs.asdict(args)
        if self.context_param:
            kwargs[self.context_param] = context
        return self.fn(**kwargs)

    def decode(self, arguments: str) -> Any:
        return self.decoder.decode(arguments)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    permissions: Iterable[str] = (),
    idempotent: bool = False,
    timeout_s: float | None = None,
    retry: Retry | None = None,
    inline: bool = False,
    max_argument_bytes: int = 65_536,
    parameters: dict[str, Any] | None = None,
    schema_options: SchemaOptions | None = None,
    max_result_bytes: int = 1_048_576,
    returns: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    permissions: Iterable[str] = (),
    idempotent: bool = False,
    timeout_s: float | None = None,
    retry: Retry | None = None,
    inline: bool = False,
    max_argument_bytes: int = 65_536,
    parameters: dict[str, Any] | None = None,
    schema_options: SchemaOptions | None = None,
    max_result_bytes: int = 1_048_576,
    returns: dict[str, Any] | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool, as ``@tool`` or ``@tool(...)``.

    permissions: what the run's principal must hold for the call to run.
    idempotent: running it twice is harmless; after a crash it simply runs again.
    timeout_s: per attempt; defaults to the run's ``Limits.tool_timeout_s``.
    retry: the schedule for failed or timed-out attempts.
    inline: run a sync function on the event loop (for cheap, non-blocking code);
        otherwise sync functions run in a worker thread.
    parameters: a JSON Schema for the arguments (an OpenAI function's ``parameters``, an MCP
        tool's ``inputSchema``), compiled once; the function takes the arguments as a dict.
        A keyword router does not support raises SchemaError here, not at call time.
    schema_options: how to read non-standard schemas (``router.schema.BFCL``).
    max_argument_bytes, max_result_bytes: the largest arguments a call may bring and the
        largest result (encoded) it may return; past them the call fails, and says why.
    returns: a JSON Schema the result must match. Without it, the function's return
        annotation is the contract; either is compiled here and checked on every result,
        and a result that breaks it is a failed call naming the path.
    """

    def declare(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            permissions=permissions,
            idempotent=idempotent,
            timeout_s=timeout_s,
            retry=retry,
            inline=inline,
            max_argument_bytes=max_argument_bytes,
            parameters=parameters,
            schema_options=schema_options,
            max_result_bytes=max_result_bytes,
            returns=returns,
        )

    return declare if fn is None else declare(fn)


def _checked(
    name: str,
    permissions: Iterable[str],
    timeout_s: float | None,
    retry: Retry | None,
    caps: tuple[int, int],
) -> tuple[str, ...]:
    """Refuse at registration what would misbehave at call time; the permissions, read
    once (a generator is read here)."""
    if not _NAME.match(name):
        raise ConfigError(f"tool name {name!r} must match {_NAME.pattern}")
    if isinstance(permissions, str | bytes):
        raise ConfigError(
            f"tool {name!r}: permissions is a collection of names, not the string "
            f"{permissions!r} (write permissions={{{permissions!r}}})"
        )
    permissions = tuple(permissions)
    if not all(isinstance(p, str) and p for p in permissions):
        raise ConfigError(f"tool {name!r}: every permission is a non-empty string")
    if timeout_s is not None and (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not 0 < timeout_s < float("inf")
    ):
        raise ConfigError(
            f"tool {name!r}: timeout_s must be a positive number of seconds, not {timeout_s!r}"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise ConfigError(f"tool {name!r}: retry must be a Retry, not {type(retry).__name__}")
    if any(type(cap) is not int or cap < 1 for cap in caps):
        raise ConfigError(f"tool {name!r}: a size cap must be a positive integer of bytes")
    return permissions


def _args_type(fn: Callable[..., Any], name: str) -> tuple[type[msgspec.Struct], bool, str]:
    """The arguments' Struct, whether the function takes it whole, and the name of its
    ToolContext parameter ("" if none)."""
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {name!r}: cannot resolve type hints: {exc}") from exc
    params = list(inspect.signature(fn).parameters.values())
    context = next((p.name for p in params if hints.get(p.name) is ToolContext), "")
    params = [p for p in params if p.name != context]
    if (
        len(params) == 1
        and isinstance(hints.get(params[0].name), type)
        and issubclass(hints[params[0].name], msgspec.Struct)
    ):
        base = hints[params[0].name]
        strict = msgspec.defstruct(base.__name__, [], bases=(base,), forbid_unknown_fields=True)
        return strict, True, context
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            raise ConfigError(
                f"tool {name!r}: parameter {p.name!r} must be a plain named parameter"
            )
        if p.name not in hints:
            raise ConfigError(f"tool {name!r}: parameter {p.name!r} has no type annotation")
        if p.default is p.empty:
            fields.append((p.name, hints[p.name]))
        else:
            fields.append((p.name, hints[p.name], p.default))
    struct_name = "".join(part.capitalize() for part in re.split(r"[_-]", name)) + "Args"
    return (
        msgspec.defstruct(struct_name, fields, forbid_unknown_fields=True, kw_only=True),
        False,
        context,
    )


def _build_decoder(
    name: str, struct: type[msgspec.Struct]
) -> tuple[msgspec.json.Decoder[Any], dict[str, Any]]:
    """The decoder of a tool's arguments Struct, and the JSON Schema shown to the model."""
    try:
        return msgspec.json.Decoder(struct), _parameters_schema(struct)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {name!r}: unsupported parameter type: {exc}") from exc


def _takes_fields_in_order(fn: Callable[..., Any], struct: type[msgspec.Struct]) -> bool:
    """Whether the Struct's fields are the function's plain parameters in order, so that the
    arguments can be passed as a tuple, not a dict of keywords, on every call."""
    return (
        tuple(
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD
        )
        == struct.__struct_fields__
    )


def _context_param(fn: Callable[..., Any], name: str) -> str:
    """The name of the function's ToolContext parameter, or ""."""
    try:
        hints = get_type_hints(fn)
    except Exception as exc:
        raise ConfigError(f"tool {name!r}: cannot resolve type hints: {exc}") from exc
    return next((p for p in inspect.signature(fn).parameters if hints.get(p) is ToolContext), "")


def _compile_parameters(
    name: str, parameters: dict[str, Any], options: SchemaOptions
) -> tuple[CompiledSchema, dict[str, Any]]:
    """The compiled schema, and the standard schema shown to the model."""
    try:
        compiled = compile_schema(parameters, options)
        shown = standard_schema(parameters, options)
    except SchemaError as exc:
        raise SchemaError(exc.where, exc.keyword, exc.reason, tool=name) from None
    if not isinstance(shown, dict) or shown.get("type") != "object":
        raise SchemaError(
            "#", "type", 'a tool\'s parameters must be a schema of "type": "object"', tool=name
        )
    return compiled, shown


def _parameters_schema(args_type: type[msgspec.Struct]) -> dict[str, Any]:
    (ref,), components = msgspec.json.schema_components([args_type], ref_template="#/$defs/{name}")
    top: dict[str, Any] = components.pop(ref["$ref"].rsplit("/", 1)[1])
    top.pop("title", None)
    if components:
        top["$defs"] = components
    return top


def record_calls(step: int, proposed: Sequence[ProposedCall]) -> tuple[ToolCall, ...]:
    """Turn a model's proposed calls into recordable ToolCalls.

    Arguments that are not UTF-8 are kept, escaped, and flagged; an empty or repeated
    call id is replaced by ``call_<step>_<index>`` so that every call of a turn is unique.
    """
    if len(proposed) == 1:  # the common turn: one call with an id and ASCII arguments
        p = proposed[0]
        if p.id and type(p.arguments) is str and p.arguments.isascii():
            return (ToolCall(id=p.id, name=str(p.name), arguments=p.arguments),)
    out: list[ToolCall] = []
    for index, p in enumerate(proposed):
        call_id, raw, invalid = p.id, p.arguments, False
        if not call_id or (index and any(c.id == call_id for c in out)):  # a turn holds a few calls
            call_id = f"call_{step}_{index}"
        if type(raw) is str and raw.isascii():  # the common case: nothing to check or escape
            out.append(ToolCall(id=call_id, name=str(p.name), arguments=raw))
            continue
        if isinstance(raw, bytes):
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text, invalid = raw.decode("utf-8", "backslashreplace"), True
        else:
            text = raw
            if not raw.isascii():
                try:
                    raw.encode()
                except UnicodeEncodeError:  # lone surrogates: not encodable as UTF-8
                    text, invalid = raw.encode("utf-8", "backslashreplace").decode(), True
        out.append(ToolCall(id=call_id, name=str(p.name), arguments=text, invalid_utf8=invalid))
    return tuple(out)


Decision = ToolCallRejected | ToolCallDenied | ToolStarted


@final
class Tools:
    """The tools a run may call, with the access policy that guards them."""

    __slots__ = ("_tools", "policy", "schemas")

    def __init__(
        self, tools: Iterable[Tool | Callable[..., Any]] = (), *, policy: Policy | None = None
    ) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            t = t if isinstance(t, Tool) else Tool(t)
            if t.name in self._tools:
                raise ConfigError(f"two tools are named {t.name!r}")
            self._tools[t.name] = t
        self.policy = policy or Policy()
        self.schemas: list[dict[str, Any]] = [t.schema for t in self._tools.values()]

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def decide(self, call: ToolCall, principal: Principal, at: int) -> tuple[Decision, Any]:
        """Check one proposed call: the event that records the decision, and the decoded
        arguments when the call may start (else None)."""
        t = self._tools.get(call.name)
        if t is None:
            known = ", ".join(self._tools) or "none"
            reason = f"no tool named {call.name!r}; the tools are: {known}"
            return ToolCallRejected(
                at=at, call_id=call.id, tool=call.name, code="unknown_tool", reason=reason
            ), None
        missing = self.policy.missing(principal, t.permissions) if t.permissions else ()
        if missing:
            return ToolCallDenied(
                at=at, call_id=call.id, tool=t.name, principal=principal.id, missing=missing
            ), None
        return self._validate(t, call, at)

    def _validate(self, t: Tool, call: ToolCall, at: int) -> tuple[Decision, Any]:
        if call.invalid_utf8:
            return _rejected(t, call, at, "not_utf8", "the arguments are not valid UTF-8")
        text = call.arguments
        size = len(text) if text.isascii() else len(text.encode())
        if size > t.max_argument_bytes:
            return _rejected(
                t,
                call,
                at,
                "oversized",
                f"the arguments are {size} bytes; the limit is {t.max_argument_bytes}",
            )
        try:
            args = t.decoder.decode(text)
        except msgspec.ValidationError as exc:
            path, reason = where_of(str(exc))
            return _rejected(t, call, at, "invalid_arguments", reason, path)
        except msgspec.DecodeError as exc:
            return _rejected(t, call, at, "malformed_json", f"the arguments are not JSON: {exc}")
        except RecursionError:
            return _rejected(
                t, call, at, "invalid_arguments", "the arguments nest too deeply to be checked", "$"
            )
        started = ToolStarted(
            at=at,
            call_id=call.id,
            tool=t.name,
            arguments=_encoder.encode(args).decode(),
            idempotent=t.idempotent,
        )
        return started, args


def _rejected(
    t: Tool, call: ToolCall, at: int, code: Any, reason: str, path: str = ""
) -> tuple[Decision, None]:
    return ToolCallRejected(
        at=at, call_id=call.id, tool=t.name, code=code, reason=reason, path=path
    ), None


def encode_result(value: Any) -> str:
    """A tool's return value as canonical JSON. Raises TypeError if it cannot be encoded."""
    return _encoder.encode(value).decode()
