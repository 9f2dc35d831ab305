"""What of a run's conversation goes into the next model call, under a token budget. Pure:
the same transcript, policy and summaries always give the same request.

The conversation is the run's opening messages (its system prompt and task: pinned, always
sent) followed by groups: a model turn with the results of its tool calls (never split), or a
message of its own (a reviewer's note). The newest ``keep_recent`` groups are sent whole.
Under pressure, in this order:

1. Once the whole conversation passes ``shorten_at`` of the budget, each tool result in an
   older group is cut to its first ``shorten_results_to`` characters, with a note of what
   was cut. The whole conversation only grows, so once cut a result stays cut.
2. A summary, where the engine has a summariser: once the request passes ``summarize_at``
   of the budget, the oldest groups are replaced by a summary (a model call of its own,
   recorded as a ``context_summarized`` event naming how many messages it replaced), so
   that the request falls to ``summarize_to`` of the budget. A resume or a replay reads
   the summary from the log and never calls the summariser again.
3. Whatever still does not fit is left out, oldest group first, with a note saying how many
   messages were left out. If the pinned messages and the newest groups alone pass the
   budget, nothing can be sent: the run ends ``limit_exceeded`` (``context_window``).

``Window`` follows a live run's transcript incrementally (a step costs O(1) bookkeeping
and a slice of the message list); ``fit`` computes the same request from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import msgspec

from ..core.events import Message
from ..core.tokens import Tokenizer, message_tokens
from ..errors import ConfigError

__all__ = ["ContextPolicy", "Request", "Window", "fit", "groups_of", "summary_message"]


class ContextPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a run fits its conversation into a budget; see the module's docs.

    budget_tokens: the most tokens a request may hold (messages, tools and framing); by
        default the model's context window less its output reserve, from the price table.
    summary_tokens: the longest summary the summariser may write (its max_tokens).
    """

    budget_tokens: int | None = None
    keep_recent: int = 3
    shorten_at: float = 0.5
    shorten_results_to: int = 400
    summarize_at: float = 0.8
    summarize_to: float = 0.5
    summary_tokens: int = 512

    def __post_init__(self) -> None:
        if self.budget_tokens is not None and self.budget_tokens < 1:
            raise ConfigError(f"budget_tokens must be positive, not {self.budget_tokens}")
        if self.keep_recent < 1 or self.shorten_results_to < 1 or self.summary_tokens < 1:
            raise ConfigError(f"keep_recent, shorten_results_to and summary_tokens: >= 1: {self}")
        if not 0 < self.summarize_to < self.summarize_at <= 1 or not 0 < self.shorten_at <= 1:
            raise ConfigError(
                f"need 0 < summarize_to < summarize_at <= 1 and 0 < shorten_at <= 1: {self}"
            )


class Request(msgspec.Struct, frozen=True):
    """One model call's messages and what the policy did to fit them."""

    messages: list[Message]
    tokens: int  # the messages' tokens, framing included (not the tools')
    shortened: int = 0  # tool results cut short
    left_out: int = 0  # messages neither sent nor summarised
    summarized: int = 0  # messages the summary stands for


def groups_of(messages: Sequence[Message], pinned: int) -> list[int]:
    """The index of each group's first message, after the ``pinned`` opening messages."""
    return [i for i in range(pinned, len(messages)) if messages[i].role != "tool"]


def _shorten(message: Message, keep: int) -> Message:
    if message.role != "tool" or len(message.content) <= keep:
        return message
    cut = len(message.content) - keep
    note = f"\n[router: {cut:,} more characters of this result were cut to fit the context]"
    return msgspec.structs.replace(message, content=message.content[:keep] + note)


def _note(left_out: int) -> Message:
    return Message(
        role="user",
        content=f"[router: {left_out:,} earlier messages were left out to fit the context]",
    )


def summary_message(text: str, replaced: int) -> Message:
    """The message a summary of ``replaced`` earlier messages stands in for them as."""
    return Message(
        role="user",
        content=f"[router: a summary of the {replaced:,} earlier messages]\n{text}",
    )


@final
class Window:
    """A run's request, kept up to date as its transcript grows.

    budget: tokens the messages may take (the policy's budget less the tools' tokens).
    """

    def __init__(
        self, policy: ContextPolicy, budget: int, tokenizer: Tokenizer, pinned: int
    ) -> None:
        self.policy, self.budget, self.tokenizer, self.pinned = policy, budget, tokenizer, pinned
        self._seen = 0  # messages followed so far
        self._starts: list[int] = []  # each group's first message
        self._full: list[int] = [0]  # prefix sums of groups' tokens, whole
        self._short: list[int] = [0]  # ... with their long tool results cut
        self._cut_messages: list[Message] = []  # each message, cut where it is a long result
        self._pinned_tokens = 0
        self._cut = 0  # groups before this one are not sent (summarised or left out)
        self.summary: Message | None = None
        self._summary_tokens = 0
        self.summarized = 0  # messages after the pinned ones that the summary stands for
        self._notes: dict[int, int] = {}  # the tokens of the note for n messages left out

    def follow(self, messages: Sequence[Message]) -> None:
        """Take in the messages the transcript gained since the last call."""
        count, keep = self.tokenizer, self.policy.shorten_results_to
        for i in range(self._seen, len(messages)):
            message = messages[i]
            full = message_tokens(count, message)
            cut_message = _shorten(message, keep)
            short = full if cut_message is message else message_tokens(count, cut_message)
            self._cut_messages.append(cut_message)
            if i < self.pinned:
                self._pinned_tokens += full
                continue
            if message.role != "tool" or not self._starts:
                self._starts.append(i)
                self._full.append(self._full[-1])
                self._short.append(self._short[-1])
            self._full[-1] += full
            self._short[-1] += short
        self._seen = len(messages)

    def summarized_by(self, text: str, replaced: int) -> None:
        """A summary now stands for the first ``replaced`` messages after the pinned ones."""
        self.summary = summary_message(text, replaced)
        self._summary_tokens = message_tokens(self.tokenizer, self.summary)
        self.summarized = replaced
        first = self.pinned + replaced
        while self._cut < len(self._starts) and self._starts[self._cut] < first:
            self._cut += 1

    def _first(self, cut: int) -> int:
        return self._starts[cut] if cut < len(self._starts) else self._seen

    def _shortening(self) -> bool:
        whole = self._pinned_tokens + self._full[len(self._starts)]
        return whole > self.policy.shorten_at * self.budget

    def _tokens(self, cut: int, summary_tokens: int, covered: int) -> int:
        """The request's tokens when the groups before ``cut`` are not sent and a summary of
        ``summary_tokens`` (0: none) stands for the first ``covered`` messages after the
        pinned ones; a note counts the rest of what is left out."""
        groups = len(self._starts)
        recent = max(cut, groups - self.policy.keep_recent)
        older = self._short if self._shortening() else self._full
        left_out = self._first(cut) - self.pinned - covered
        note = self._note_tokens(left_out) if left_out > 0 else 0
        return (
            self._pinned_tokens
            + summary_tokens
            + note
            + (older[recent] - older[cut])
            + (self._full[groups] - self._full[recent])
        )

    def _note_tokens(self, left_out: int) -> int:
        tokens = self._notes.get(left_out)
        if tokens is None:
            tokens = self._notes[left_out] = message_tokens(self.tokenizer, _note(left_out))
        return tokens

    def _now(self, cut: int) -> int:
        return self._tokens(cut, self._summary_tokens, self.summarized)

    def wants_summary(self) -> int | None:
        """How many messages after the pinned ones a new summary should stand for, now that
        the request has passed ``summarize_at`` of the budget; None if it has not, or if
        only the newest groups are left."""
        policy, groups = self.policy, len(self._starts)
        if self._now(self._cut) <= policy.summarize_at * self.budget:
            return None
        target, cut = policy.summarize_to * self.budget, self._cut
        estimate = policy.summary_tokens + message_tokens(self.tokenizer, summary_message("", 0))
        while cut < groups - policy.keep_recent:
            cut += 1
            if self._tokens(cut, estimate, self._first(cut) - self.pinned) <= target:
                break
        if cut == self._cut:
            return None
        return self._first(cut) - self.pinned

    def needed(self) -> int:
        """The tokens of the smallest request the policy can make: the pinned messages, a
        summary if any, and the newest groups."""
        return self._now(max(self._cut, len(self._starts) - self.policy.keep_recent))

    def request(self, messages: Sequence[Message]) -> Request | None:
        """The next call's messages, or None when not even the pinned messages and the
        newest groups fit."""
        groups, keep = len(self._starts), self.policy.keep_recent
        while self._now(self._cut) > self.budget:
            if self._cut >= groups - keep:
                return None
            self._cut += 1
        return self._build(messages, self._now(self._cut))

    def _build(self, messages: Sequence[Message], tokens: int) -> Request:
        groups, keep = len(self._starts), self.policy.keep_recent
        first = self._first(self._cut)
        recent = self._first(max(self._cut, groups - keep))
        head: list[Message] = list(messages[: self.pinned])
        left_out = first - self.pinned - self.summarized
        if self.summary is not None:
            head.append(self.summary)
        if left_out > 0:
            head.append(_note(left_out))
        older: Sequence[Message] = messages[first:recent]
        shortened = 0
        if self._shortening():
            cut = self._cut_messages[first:recent]
            shortened = sum(1 for a, b in zip(cut, older, strict=True) if a is not b)
            older = cut
        return Request(
            [*head, *older, *messages[recent:]],
            tokens,
            shortened=shortened,
            left_out=max(left_out, 0),
            summarized=self.summarized,
        )


def fit(
    messages: Sequence[Message],
    *,
    policy: ContextPolicy,
    budget: int,
    tokenizer: Tokenizer,
    pinned: int,
    summary: tuple[str, int] | None = None,
) -> Request | None:
    """The request for ``messages`` from scratch (what a ``Window`` that followed them
    gives); ``summary``: the text of the latest summary and how many messages it replaced."""
    window = Window(policy, budget, tokenizer, pinned)
    window.follow(messages)
    if summary is not None:
        window.summarized_by(*summary)
    return window.request(messages)
