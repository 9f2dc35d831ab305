"""The terms a run is started under, as its first event records them: who it acts for
(``Principal``), its hard limits (``Limits``), when it waits for a person (``ReviewRules``)
and how its payloads are redacted (``RedactionPolicy``); and ``Data``, the base of every
plain record an event carries."""

from __future__ import annotations

import msgspec

from ..errors import ConfigError

__all__ = ["Data", "Limits", "Principal", "RedactionPolicy", "ReviewRules"]


class Data(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of the plain records that events carry."""


class Principal(Data, frozen=True):
    """Who a run acts for: an id and the roles it holds."""

    id: str
    roles: frozenset[str] = frozenset()


class Limits(Data, frozen=True, omit_defaults=False):
    """Hard limits of a run. ``None`` turns a limit off.

    A step is one model turn. Limits gate the next effect: a run that crosses one ends
    in ``limit_exceeded`` before router calls the model or a tool again.

    final_answer: a run that reaches a step, tool call, token, cost, loop, rejected-call or
    failure limit asks the model once more, offering no tools and capping the answer to
    what the budgets have left, and ends ``limit_exceeded`` with that answer as its output,
    marked forced (a deadline or an expiry ends the run at once: no time is left). The
    last of ``max_steps`` is kept for that answer. Off by default: with it off a limit
    means no further model call at all, which is what an audit of a hard limit expects;
    turning it on spends one more call for a usable output.
    """

    max_steps: int = 50
    max_tool_calls: int = 200
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    deadline_s: float | None = None  # active seconds: time parked waiting does not count
    expires_at: float | None = None  # an absolute expiry, seconds since the Unix epoch
    tool_timeout_s: float | None = 30.0
    model_timeout_s: float | None = 300.0  # each call to a model (its retries are calls too)
    max_repeats: int = 3  # the same tool with the same arguments, within loop_window calls
    loop_window: int = 10
    max_rejected_calls: int = 5  # invalid, unknown or denied calls per run
    max_failures_in_a_row: int = 5  # tool calls failed (timed out included) one after another
    final_answer: bool = False  # at a limit, ask the model once more with no tools

    @property
    def timed(self) -> bool:
        """Whether a deadline or an expiry bounds the run's waits."""
        return self.deadline_s is not None or self.expires_at is not None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "final_answer":
                if not isinstance(value, bool):
                    raise ConfigError(f"Limits.final_answer must be True or False, not {value!r}")
                continue
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ConfigError(
                    f"Limits.{name} must be a non-negative number or None, not {value!r}"
                )
            if name in _SECONDS_OR_DOLLARS and isinstance(value, int):
                # 60 and 60.0 are the same limit: store one form, so equal limits encode equally
                msgspec.structs.force_setattr(self, name, float(value))
        for name in ("tool_timeout_s", "model_timeout_s"):
            if getattr(self, name) == 0:
                raise ConfigError(f"Limits.{name} must be positive or None (no timeout), not 0")
        if self.max_repeats < 1 or self.loop_window < 1:
            raise ConfigError("Limits.max_repeats and Limits.loop_window must be at least 1")


_SECONDS_OR_DOLLARS = frozenset(
    {"max_cost_usd", "deadline_s", "expires_at", "tool_timeout_s", "model_timeout_s"}
)


class ReviewRules(Data, frozen=True, omit_defaults=False):
    """When a run pauses for a person. The run waits in the log, costing nothing, until
    someone approves or rejects (``review_run``, ``router approve`` / ``router reject``).

    before_tools: calls to these tools wait for approval before they are validated and run
        (the reviewer may edit the arguments).
    after_tools: after these tools succeed, the run waits before the model sees the result.
    cost_over_usd: the run waits once its cost passes this, before the next model call.
    tool_failures: the run waits after this many tool calls in a row failed.
    output_check: the name of the engine's answer check; an answer it objects to waits.
    """

    before_tools: frozenset[str] = frozenset()
    after_tools: frozenset[str] = frozenset()
    cost_over_usd: float | None = None
    tool_failures: int | None = None
    output_check: str = ""


class RedactionPolicy(Data, frozen=True):
    """A run's redaction policy as it records it (see ``router.core.redaction``), so that every
    later writer of the run's log seals with it."""

    patterns: dict[str, str] = {}
    fields: tuple[str, ...] = ()
