"""router: a deterministic, in-process LLM orchestration router.

The model proposes, router decides: every tool call is validated against precompiled
schemas and checked against the run's principal, the loop is an explicit state machine
with hard limits, and every step is appended to a tamper-evident log that a run
resumes and replays from.
"""

from __future__ import annotations

from .access import Policy
from .chain import verify
from .clock import ManualClock, SequentialIds, SystemClock
from .engine import Engine, RunResult
from .reviews import resolve_call, review_run
from .runlog import fork_run, load_run
from .errors import (
    ChainBroken,
    ConfigError,
    DecisionError,
    DefinitionChanged,
    LeaseHeld,
    LeaseLost,
    RouterError,
    RunNotFound,
    RunNotResumable,
    SchemaError,
    SeqConflict,
    StoreError,
)
from .events import Limits, Message, Principal, ReviewRules, Usage
from .fsm import Phase, RunState
from .limits import Price, PriceTable
from .models.scripted import ScriptedModel
from .protocols import Model, ModelTurn, ProposedCall, Store
from .redaction import Redaction
from .store.memory import MemoryStore
from .store.sqlite import Durability, SqliteStore
from .tools import Retry, Tool, Tools, tool

__version__ = "0.1.0"

__all__ = [
    "SchemaError", "ChainBroken", "ConfigError", "DecisionError", "DefinitionChanged", "Durability", "Engine", "LeaseHeld", "LeaseLost",
    "Limits", "ManualClock", "MemoryStore", "Message", "Model", "ModelTurn", "Phase", "Policy", "Price",
    "PriceTable", "Principal", "ProposedCall", "Redaction", "Retry", "RouterError", "RunNotFound", "RunNotResumable",
    "RunResult", "RunState", "ScriptedModel", "SeqConflict", "SequentialIds", "SqliteStore", "Store",
    "StoreError", "SystemClock", "Tool", "ReviewRules", "Tools", "Usage", "fork_run", "load_run", "review_run", "resolve_call", "tool", "verify",
]
