"""The conversation the model sees, as a pure fold of the run's events.

Tool results of one model turn are released together, in the order the model proposed
the calls, once every call of the turn has an outcome: the model never sees a half turn,
and completion order never changes what it sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .events import (
    ContextSummarized,
    Event,
    LimitExceeded,
    Limits,
    MemoryRecalled,
    Message,
    ModelResponded,
    ReviewDecided,
    RunStarted,
    ToolCall,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolSucceeded,
)
from .limits import forces_answer

__all__ = ["FINAL_ANSWER_PROMPT", "Transcript", "origins"]

# What the model is told when a limit asks it for its last answer (Limits.final_answer).
FINAL_ANSWER_PROMPT = (
    "This run has reached a limit ({limit}) and no tools are available any more. "
    "Give your final answer now, as well as you can from what you have so far."
)
CUT_OFF = "error[cut_off]: the run reached a limit before this call had a result"


class Transcript:
    """Messages so far; ``apply`` is O(1) per event (plus one turn's release).

    ``opening``: how many messages the run started with (its system prompt and task);
    ``summary``: the latest summary's text and how many messages after the opening ones it
    stands for.
    """

    __slots__ = (
        "_messages",
        "_turn",
        "_outcomes",
        "opening",
        "summary",
        "recalled",
        "limits",
        "forced",
    )

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._messages: list[Message] = []
        self._turn: tuple[ToolCall, ...] = ()  # the calls of the open turn
        self._outcomes: dict[str, str] = {}
        self.opening = 0
        self.summary: tuple[str, int] | None = None
        self.recalled: MemoryRecalled | None = None  # the latest recall, for its step only
        self.limits = Limits()
        self.forced = ""  # the limit that asked the model for a final answer
        for event in events:
            self.apply(event)

    @property
    def messages(self) -> Sequence[Message]:
        """The messages so far. Read-only: copy before changing."""
        return self._messages

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _responded(self, event: ModelResponded) -> None:
        self._messages.append(
            Message(role="assistant", content=event.text, tool_calls=event.tool_calls)
        )
        self._turn = event.tool_calls
        if self._outcomes:  # a turn left unsettled (a reviewer's decision ended it)
            self._outcomes = {}

    def _succeeded(self, event: ToolSucceeded) -> None:
        self._settle(event.call_id, event.result)

    def _failed(self, event: ToolFailed) -> None:
        what = "timed out" if event.timed_out else "failed"
        self._settle(event.call_id, f"error[tool_failed]: the tool {what}: {event.error}")

    def _rejected(self, event: ToolCallRejected) -> None:
        where = f" at {event.path}" if event.path else ""
        self._settle(event.call_id, f"error[{event.code}]{where}: {event.reason}")

    def _denied(self, event: ToolCallDenied) -> None:
        self._settle(
            event.call_id,
            f"error[permission_denied]: {event.principal} lacks {', '.join(event.missing)}",
        )

    def _resolved(self, event: ToolCallResolved) -> None:
        if event.decision == "supply":
            self._settle(event.call_id, event.result)

    def _reviewed(self, event: ReviewDecided) -> None:
        if event.decision == "approve":
            return
        note = f": {event.note}" if event.note else ""
        if event.rule == "before_tool":
            for call_id in event.call_ids:
                self._settle(call_id, f"error[rejected_by_reviewer]{note}")
        elif event.rule == "output_check":
            self._messages.append(
                Message(role="user", content=f"A reviewer rejected that answer{note}")
            )

    def _started(self, event: RunStarted) -> None:
        self._messages.extend(event.messages)
        self.opening = len(event.messages)
        self.limits = event.limits

    def _limited(self, event: LimitExceeded) -> None:
        """At a limit that asks for a final answer: the open turn's calls that have no
        result are cut off, and the model is told to answer."""
        if self.forced or not forces_answer(self.limits, event.limit):
            return
        self.forced = event.limit
        for call in self._turn:
            if call.id not in self._outcomes:
                self._settle(call.id, CUT_OFF)
        self._messages.append(
            Message(role="user", content=FINAL_ANSWER_PROMPT.format(limit=event.limit))
        )

    def _summarized(self, event: ContextSummarized) -> None:
        self.summary = (event.text, event.replaced)

    def _recalled(self, event: MemoryRecalled) -> None:
        self.recalled = event

    def _settle(self, call_id: str, content: str) -> None:
        turn = self._turn
        if len(turn) == 1 and turn[0].id == call_id:  # a turn of one call: released at once
            self._messages.append(
                Message(role="tool", content=content, call_id=call_id, name=turn[0].name)
            )
            self._turn = ()
            return
        outcomes = self._outcomes
        outcomes[call_id] = content
        if len(outcomes) < len(turn):
            return
        released = []
        for call in turn:  # a plain loop: this runs once per tool result
            text = outcomes.get(call.id)
            if text is None:
                return
            released.append(Message(role="tool", content=text, call_id=call.id, name=call.name))
        self._messages.extend(released)
        self._turn, self._outcomes = (), {}


def origins(events: Iterable[Event]) -> list[int]:
    """The seq of the event each message of the transcript of ``events`` came from (a
    summary names the events it replaced; computed then, off every step's path)."""
    transcript, seqs = Transcript(), []
    for seq, event in enumerate(events):
        before = len(transcript.messages)
        transcript.apply(event)
        seqs += [seq] * (len(transcript.messages) - before)
    return seqs


# Events not listed never change what the model sees.
_HANDLERS: dict[type[Event], Callable[[Transcript, Any], None]] = {
    RunStarted: Transcript._started,
    ContextSummarized: Transcript._summarized,
    MemoryRecalled: Transcript._recalled,
    ModelResponded: Transcript._responded,
    ToolSucceeded: Transcript._succeeded,
    ToolFailed: Transcript._failed,
    ToolCallRejected: Transcript._rejected,
    ToolCallDenied: Transcript._denied,
    ToolCallResolved: Transcript._resolved,
    ReviewDecided: Transcript._reviewed,
    LimitExceeded: Transcript._limited,
}
