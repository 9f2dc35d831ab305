"""An agent for the command line's tests: ``router resume RUN --agent cli_agents:clerk``
(or ``:clerk_v2``, the same agent with one more tool). A payment waits for a reviewer."""

from __future__ import annotations

from router import Engine, ReviewRules, Runtime, ScriptedModel, Tools, tool
from router.core.protocols import Store
from router.models.scripted import call, say

RULES = ReviewRules(before_tools=frozenset({"pay"}))
SCRIPT = [call("pay", '{"cents": 500}'), say("paid")]


@tool
async def pay(cents: int) -> str:
    """Pay an amount in cents."""
    return f"paid {cents}"


@tool
async def note(text: str) -> str:
    """Write a note."""
    return "noted"


def clerk(store: Store) -> Engine:
    return Engine(
        Runtime(store, owner="cli"),
        ScriptedModel(SCRIPT),
        Tools([pay]),
        review=RULES,
        agent="clerk",
    )


def clerk_v2(store: Store) -> Engine:
    return Engine(
        Runtime(store, owner="cli"),
        ScriptedModel(SCRIPT),
        Tools([pay, note]),
        review=RULES,
        agent="clerk",
    )
