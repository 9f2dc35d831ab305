"""Every fact a run records, as frozen msgspec Structs in one tagged union.

A run is the sequence of these events and nothing else: its state is a fold of them
(see ``router.core.fsm``). Each event carries ``at``, the injected clock's reading in
microseconds, which is recorded as a fact and never read back as "now".

The encoding is canonical: one encoder, struct fields in declaration order, dict keys
sorted, defaults omitted. Equal runs give byte-equal payloads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

import msgspec

from .terms import Data, Limits, Principal, RedactionPolicy, ReviewRules

__all__ = [
    "EVENT_TYPES",
    "KINDS",
    "NO_USAGE",
    "ContextSummarized",
    "Event",
    "GraphStarted",
    "Kind",
    "LimitExceeded",
    "Limits",
    "MemoryRecalled",
    "Message",
    "ModelResponded",
    "ModelRouted",
    "NodeFailed",
    "NodeFinished",
    "Principal",
    "RedactionPolicy",
    "ReviewDecided",
    "ReviewRequested",
    "ReviewRules",
    "RouteAttempt",
    "RunCancelled",
    "RunFailed",
    "RunForked",
    "RunInterrupted",
    "RunMigrated",
    "RunParked",
    "RunResumed",
    "RunStarted",
    "Sent",
    "StepRouted",
    "StoredEvent",
    "Task",
    "ToolCall",
    "ToolCallDenied",
    "ToolCallRejected",
    "ToolCallResolved",
    "ToolFailed",
    "ToolStarted",
    "ToolSucceeded",
    "Usage",
    "decode_event",
    "decode_events",
    "encode_event",
    "kind_of",
    "kind_of_type",
    "spent",
]


class ToolCall(Data, frozen=True):
    """One tool call as the model proposed it, arguments still unparsed."""

    id: str
    name: str
    arguments: str
    invalid_utf8: bool = False  # the model's bytes were not UTF-8; ``arguments`` is escaped


class Usage(Data, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# The one zero usage, the default of every event that spends tokens. An event is encoded
# without a usage field only when it holds this very instance, so the engine records
# "spent nothing" as NO_USAGE, whatever instance the model or the tool returned.
NO_USAGE = Usage()


def spent(usage: Usage) -> Usage:
    """The usage as an event records it: NO_USAGE when nothing was spent."""
    return usage if usage.input_tokens or usage.output_tokens else NO_USAGE


class Message(Data, frozen=True):
    """One message of the conversation the model sees."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    call_id: str = ""  # for role "tool": the call this message answers
    name: str = ""  # for role "tool": the tool's name


class Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False, tag_field="kind"
):
    """Base of every event. ``at`` is the clock's reading in microseconds."""

    at: int


class RunStarted(Event, frozen=True, tag="run_started"):
    messages: tuple[Message, ...]
    principal: Principal
    limits: Limits
    model: str
    tools: tuple[str, ...] = ()
    definition: str = ""  # sha256 of what decides the run: tools and schemas, policy, prices
    redaction: RedactionPolicy = (
        RedactionPolicy()
    )  # what the stored copy of every event has redacted
    agent: str = ""  # the name of the agent (the engine) that runs it
    review: ReviewRules = ReviewRules()
    parent_run_id: str = ""  # the run that spawned this one, for a child agent
    parts: dict[
        str, str
    ] = {}  # the definition's parts by name (code included), hashed: what changed


class Sent(Data, frozen=True):
    """What went into a model call where router bounded it (a context policy, or a token or
    cost ceiling): the request's tokens as counted (an upper bound unless the tokenizer is
    exact), its messages, the answer's cap, and what the context policy did to fit it."""

    tokens: int
    messages: int
    max_tokens: int = 0  # 0: the answer was not capped
    shortened: int = 0  # older tool results cut short
    left_out: int = 0  # older messages neither sent nor summarised
    summarized: int = 0  # older messages a summary stood in for


class ModelResponded(Event, frozen=True, tag="model_responded"):
    step: int
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = NO_USAGE
    cost_nusd: int = 0  # cost in billionths of a US dollar, from the run's price table
    model: str = ""  # the model asked, which the cost is priced at
    latency_us: int = 0
    held: str = ""  # why the output check held this answer back for review
    served_model: str = ""  # the exact model the provider reports, when it names another
    sent: Sent | None = None  # what went into the call, where router bounded it
    forced: str = ""  # the limit that forced this answer (asked with no tools), if one did


class ContextSummarized(Event, frozen=True, tag="context_summarized"):
    """A summary now stands for the first ``replaced`` messages after the run's opening
    ones (those of the log's events ``first_seq`` to ``last_seq``): a model call of its own,
    priced and counted like a turn, so a resume or a replay never calls it again."""

    step: int  # the model turn it was made for
    replaced: int
    text: str
    first_seq: int
    last_seq: int
    usage: Usage = NO_USAGE
    cost_nusd: int = 0
    model: str = ""
    latency_us: int = 0


class MemoryRecalled(Event, frozen=True, tag="memory_recalled"):
    """What long-term memory gave the next model turn, in rank order: recorded before the
    call, so a resume or a replay needs neither the embedder nor the memory."""

    step: int
    namespace: str
    query: str
    ids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


class RouteAttempt(Data, frozen=True):
    """One candidate a routing policy considered for a model call, and what came of it."""

    model: str
    reason: str  # why it was tried (or considered): "fallback 2 of 3", "cheapest with tools"
    outcome: Literal["answered", "failed", "timed_out", "skipped"]
    detail: str = ""  # the error, or why it was skipped (circuit open, lacks a capability)
    latency_us: int = 0


class ModelRouted(Event, frozen=True, tag="model_routed"):
    """How a routing policy chose the model for one model call: every candidate in the
    order considered, and why. ``chosen`` is empty when none answered."""

    step: int
    chosen: str
    attempts: tuple[RouteAttempt, ...]


class ToolCallRejected(Event, frozen=True, tag="tool_call_rejected"):
    """A proposed call that cannot run: unknown tool or invalid arguments."""

    call_id: str
    tool: str
    code: Literal["unknown_tool", "invalid_arguments", "malformed_json", "oversized", "not_utf8"]
    reason: str
    path: str = ""  # where in the arguments, as $.field[0].sub


class ToolCallDenied(Event, frozen=True, tag="tool_call_denied"):
    call_id: str
    tool: str
    principal: str
    missing: tuple[str, ...]


class ToolStarted(Event, frozen=True, tag="tool_started"):
    call_id: str
    tool: str
    arguments: str  # canonical JSON of the validated arguments
    idempotent: bool
    attempt: int = 1  # 2 and more after a reviewer asked for a retry


class ToolSucceeded(Event, frozen=True, tag="tool_succeeded"):
    call_id: str
    tool: str
    result: str  # JSON
    # The tool's own time: from when its decoded arguments are handed to it (after any
    # commit, validation or context building) to its result.
    latency_us: int = 0
    attempts: int = 1
    usage: Usage = NO_USAGE  # tokens the tool spent (a child agent's), counted against the run
    cost_nusd: int = 0
    child_run_id: str = ""  # the child run that produced the result
    final: bool = False  # a handoff: the result is the run's answer


class ToolFailed(Event, frozen=True, tag="tool_failed"):
    call_id: str
    tool: str
    error: str
    timed_out: bool = False
    latency_us: int = 0
    attempts: int = 1
    usage: Usage = NO_USAGE  # what the tool spent before it failed (a child agent's)
    cost_nusd: int = 0
    child_run_id: str = ""


class RunResumed(Event, frozen=True, tag="run_resumed"):
    owner: str


class RunParked(Event, frozen=True, tag="run_parked"):
    """A worker could not resume the run, again and again: it waits for an operator (an
    explicit resume continues it)."""

    reason: str
    owner: str
    attempts: int


class RunForked(Event, frozen=True, tag="run_forked"):
    """This run copies another's first ``parent_seq`` events and goes on from there."""

    parent_run_id: str
    parent_seq: int  # the parent's events 0 .. parent_seq - 1 were copied
    parent_hash: str  # hex of the parent's hash at parent_seq - 1: ties the fork to its chain
    note: str = ""


class RunMigrated(Event, frozen=True, tag="run_migrated"):
    """The run continues under a changed definition, as its operator chose by name."""

    migration: str
    from_definition: str
    to_definition: str
    parts: dict[str, str] = {}  # the new definition's parts, for naming what changes next


class RunInterrupted(Event, frozen=True, tag="run_interrupted"):
    """Calls started before a crash, with no result, whose tools are not idempotent."""

    call_ids: tuple[str, ...]
    reason: str


class ToolCallResolved(Event, frozen=True, tag="tool_call_resolved"):
    """A reviewer's decision on an interrupted call."""

    call_id: str
    decision: Literal["retry", "supply", "fail"]
    result: str = ""  # JSON, for "supply"
    by: str = ""
    note: str = ""


class ReviewRequested(Event, frozen=True, tag="review_requested"):
    """The run waits for a person: which rule, why, and the calls it holds, if any."""

    rule: Literal[
        "before_tool",
        "after_tool",
        "cost",
        "tool_failures",
        "output_check",
        "before_node",
        "after_node",
    ]
    reason: str
    call_ids: tuple[str, ...] = ()


class ReviewDecided(Event, frozen=True, tag="review_decided"):
    """A person's decision on the pending review."""

    decision: Literal["approve", "reject"]
    rule: str  # the rule of the review it decides
    call_ids: tuple[str, ...] = ()  # the calls it releases or refuses
    by: str = ""
    note: str = ""
    arguments: str = ""  # approved with an edit: the new arguments of the one held call
    edited: tuple[str, ...] = ()  # the arguments an edit patched, or ("*",): replaced whole


class Task(Data, frozen=True):
    """One node to run in a graph step; ``item`` is the JSON of a mapped item, if any."""

    node: str
    item: str = ""


class GraphStarted(Event, frozen=True, tag="graph_started"):
    graph: str
    definition: str  # sha256 of the graph's nodes, edges, reducers and policies
    state: str  # the initial state, JSON
    principal: Principal
    limits: Limits
    first: tuple[Task, ...]
    parent_run_id: str = ""  # the run that started this one, for a subgraph
    redaction: RedactionPolicy = RedactionPolicy()
    parts: dict[str, str] = {}


class NodeFinished(Event, frozen=True, tag="node_finished"):
    step: int
    node: str
    update: str  # the state update it returned, JSON
    item: str = ""
    attempts: int = 1
    latency_us: int = 0
    usage: Usage = NO_USAGE  # what the node's child runs spent
    cost_nusd: int = 0


class NodeFailed(Event, frozen=True, tag="node_failed"):
    step: int
    node: str
    error: str
    item: str = ""
    timed_out: bool = False
    attempts: int = 1
    latency_us: int = 0
    usage: Usage = NO_USAGE
    cost_nusd: int = 0


class StepRouted(Event, frozen=True, tag="step_routed"):
    """The step's updates are merged; these tasks run next (none: the graph is done)."""

    step: int
    next: tuple[Task, ...]


class LimitExceeded(Event, frozen=True, tag="limit_exceeded"):
    limit: str
    value: (
        int | float
    )  # a count stays an int, so that decoding and re-encoding gives the same bytes
    ceiling: int | float
    detail: str = ""


class RunFailed(Event, frozen=True, tag="run_failed"):
    code: str
    reason: str


class RunCancelled(Event, frozen=True, tag="run_cancelled"):
    reason: str = ""
    # calls still running when the run was cancelled whose tools are not idempotent: a tool
    # in a worker thread cannot be stopped, so its side effect may still happen
    unsure: tuple[str, ...] = ()


AnyEvent: TypeAlias = (
    RunStarted
    | ModelRouted
    | ModelResponded
    | ContextSummarized
    | MemoryRecalled
    | ToolCallRejected
    | ToolCallDenied
    | ToolStarted
    | ToolSucceeded
    | ToolFailed
    | RunResumed
    | RunParked
    | RunForked
    | RunMigrated
    | RunInterrupted
    | ToolCallResolved
    | ReviewRequested
    | ReviewDecided
    | GraphStarted
    | NodeFinished
    | NodeFailed
    | StepRouted
    | LimitExceeded
    | RunFailed
    | RunCancelled
)

EVENT_TYPES: tuple[type[Event], ...] = AnyEvent.__args__


class Kind(enum.StrEnum):
    """The stable ``kind`` tag of every event type."""

    RUN_STARTED = "run_started"
    MODEL_ROUTED = "model_routed"
    MODEL_RESPONDED = "model_responded"
    CONTEXT_SUMMARIZED = "context_summarized"
    MEMORY_RECALLED = "memory_recalled"
    TOOL_CALL_REJECTED = "tool_call_rejected"
    TOOL_CALL_DENIED = "tool_call_denied"
    TOOL_STARTED = "tool_started"
    TOOL_SUCCEEDED = "tool_succeeded"
    TOOL_FAILED = "tool_failed"
    RUN_RESUMED = "run_resumed"
    RUN_PARKED = "run_parked"
    RUN_FORKED = "run_forked"
    RUN_MIGRATED = "run_migrated"
    RUN_INTERRUPTED = "run_interrupted"
    TOOL_CALL_RESOLVED = "tool_call_resolved"
    REVIEW_REQUESTED = "review_requested"
    REVIEW_DECIDED = "review_decided"
    GRAPH_STARTED = "graph_started"
    NODE_FINISHED = "node_finished"
    NODE_FAILED = "node_failed"
    STEP_ROUTED = "step_routed"
    LIMIT_EXCEEDED = "limit_exceeded"
    RUN_FAILED = "run_failed"
    RUN_CANCELLED = "run_cancelled"


KINDS: dict[type[Event], Kind] = {t: Kind(str(t.__struct_config__.tag)) for t in EVENT_TYPES}


def kind_of(event: Event) -> Kind:
    return KINDS[type(event)]


def kind_of_type(event_type: type[Event]) -> Kind:
    return KINDS[event_type]


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as a store holds it: position, canonical payload and chain links."""

    run_id: str
    seq: int
    kind: str
    payload: bytes
    prev_hash: bytes
    hash: bytes


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)


# The canonical bytes of an event (its stored payload). The encoder's own method, not a
# wrapper around it: it runs once per event on the hot path.
encode_event: Callable[[Event], bytes] = _encoder.encode


def decode_event(payload: bytes) -> AnyEvent:
    return _decoder.decode(payload)


_list_decoder: msgspec.json.Decoder[list[AnyEvent]] = msgspec.json.Decoder(list[AnyEvent])


def decode_events(payloads: Sequence[bytes]) -> list[AnyEvent]:
    """Decode many canonical payloads in one call (a run's log, on resume), or raise
    msgspec.DecodeError. Each payload must be one JSON object: an empty one breaks the
    array's syntax, and a payload holding two is caught by the count."""
    events = _list_decoder.decode(b"[" + b",".join(payloads) + b"]")
    if len(events) != len(payloads):
        raise msgspec.DecodeError(f"{len(payloads)} payloads held {len(events)} events")
    return events
