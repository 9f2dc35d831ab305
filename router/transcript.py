"""The conversation the model sees, as a pure fold of the run's events.

Tool results of one model turn are released together, in the order the model proposed
the calls, once every call of the turn has an outcome: the model never sees a half turn,
and completion order never changes what it sees.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .events import (
    Event,
    Message,
    ModelResponded,
    RunStarted,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolSucceeded,
)

__all__ = ["Transcript"]


class Transcript:
    """Messages so far; ``apply`` is O(1) per event (plus one turn's release)."""

    __slots__ = ("_messages", "_turn", "_outcomes")

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._messages: list[Message] = []
        self._turn: tuple[tuple[str, str], ...] = ()  # (call id, tool) of the open turn
        self._outcomes: dict[str, str] = {}
        for event in events:
            self.apply(event)

    @property
    def messages(self) -> Sequence[Message]:
        """The messages so far. Read-only: copy before changing."""
        return self._messages

    def apply(self, event: Event) -> None:
        if isinstance(event, ModelResponded):
            self._messages.append(Message(role="assistant", content=event.text, tool_calls=event.tool_calls))
            self._turn = tuple((c.id, c.name) for c in event.tool_calls)
            self._outcomes = {}
            return
        if isinstance(event, ToolSucceeded):
            self._settle(event.call_id, event.result)
        elif isinstance(event, ToolFailed):
            what = "timed out" if event.timed_out else "failed"
            self._settle(event.call_id, f"error[tool_failed]: the tool {what}: {event.error}")
        elif isinstance(event, ToolCallRejected):
            where = f" at {event.path}" if event.path else ""
            self._settle(event.call_id, f"error[{event.code}]{where}: {event.reason}")
        elif isinstance(event, ToolCallDenied):
            needs = ", ".join(event.missing)
            self._settle(event.call_id, f"error[permission_denied]: {event.principal} lacks {needs}")
        elif isinstance(event, ToolCallResolved) and event.decision == "supply":
            self._settle(event.call_id, event.result)
        elif isinstance(event, RunStarted):
            self._messages.extend(event.messages)

    def _settle(self, call_id: str, content: str) -> None:
        self._outcomes[call_id] = content
        if len(self._outcomes) < len(self._turn) or any(cid not in self._outcomes for cid, _ in self._turn):
            return
        for cid, name in self._turn:
            self._messages.append(Message(role="tool", content=self._outcomes[cid], call_id=cid, name=name))
        self._turn, self._outcomes = (), {}
