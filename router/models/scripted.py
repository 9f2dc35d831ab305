"""A deterministic model for tests, the bench and the demo: no network, no randomness."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, final

import msgspec

from ..core.events import Message, Usage
from ..core.protocols import ModelTurn, ProposedCall

__all__ = ["ScriptedModel", "call", "say"]

Script = Callable[[Sequence[Message]], ModelTurn]


def call(
    name: str, arguments: str | bytes, call_id: str = "", *, usage: Usage | None = None
) -> ModelTurn:
    """A turn that proposes one tool call."""
    return ModelTurn(tool_calls=(ProposedCall(call_id, name, arguments),), usage=usage or Usage())


def say(text: str, *, usage: Usage | None = None) -> ModelTurn:
    """A turn that answers with text and ends the run."""
    return ModelTurn(text=text, usage=usage or Usage())


@final
class ScriptedModel:
    """Plays a list of turns in order, or asks a function for each turn.

    From a list, the turn is chosen by the number of assistant messages so far, so a
    resumed run picks up where its log left off. Past the end of the list it answers
    ``"(script ended)"``, which ends the run. Given ``max_tokens``, a turn's output usage is
    cut to it, as a provider stops generating there; ``caps`` records each call's cap.
    """

    def __init__(self, script: Sequence[ModelTurn] | Script, *, name: str = "scripted") -> None:
        self.name = name
        self._script = script
        self.calls = 0  # how many times the model was asked
        self.caps: list[int | None] = []  # the max_tokens of each call
        self._counted: tuple[Sequence[Message], int, int] = (
            (),
            0,
            0,
        )  # (messages, length, assistant turns)

    async def respond(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]],
        *,
        max_tokens: int | None = None,
    ) -> ModelTurn:
        self.calls += 1
        self.caps.append(max_tokens)
        if callable(self._script):
            turn = self._script(messages)
        else:
            step = self._assistant_turns(messages)
            turn = self._script[step] if step < len(self._script) else say("(script ended)")
        if max_tokens is not None and turn.usage.output_tokens > max_tokens:
            cut = msgspec.structs.replace(turn.usage, output_tokens=max_tokens)
            turn = msgspec.structs.replace(turn, usage=cut)
        return turn

    def _assistant_turns(self, messages: Sequence[Message]) -> int:
        """Count assistant messages, incrementally while the same list only grows."""
        seen, length, count = self._counted
        if seen is not messages or length > len(messages):
            length, count = 0, 0
        count += sum(1 for m in messages[length:] if m.role == "assistant")
        self._counted = (messages, len(messages), count)
        return count
