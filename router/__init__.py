"""router: a deterministic, in-process LLM orchestration router.

The model proposes, router decides: every tool call is validated against precompiled
schemas and checked against the run's principal, the loop is an explicit state machine
with hard limits, and every step is appended to a tamper-evident log that a run
resumes and replays from.
"""

from __future__ import annotations

from .core.access import Policy
from .core.chain import verify
from .core.clock import ManualClock, SequentialIds
from .core.events import Limits, Message, Principal, ReviewRules, Usage
from .core.fsm import Phase, RunState
from .core.limits import Budget, Price, PriceTable
from .core.protocols import (
    Embedder,
    Memory,
    Model,
    ModelTurn,
    ProposedCall,
    RankWeights,
    Store,
)
from .core.redaction import Redaction
from .core.tokens import ByteBound, Tokenizer
from .core.tools import Retry, Tool, ToolContext, ToolOutput, Tools, tool
from .errors import (
    ChainBroken,
    ConfigError,
    DecisionError,
    DefinitionChanged,
    LeaseHeld,
    LeaseLost,
    LogNotIntact,
    NotALog,
    RouterError,
    RunNotFound,
    SchemaError,
    SeqConflict,
    StoreCorrupt,
    StoreError,
    StoreLost,
)
from .graph import END, Graph, GraphEngine, GraphResult
from .memory import ContextPolicy
from .memory.embedding import HashedEmbedder
from .models.scripted import ScriptedModel
from .run.decisions import resolve_call, review_graph_run, review_run
from .run.engine import Engine, RunResult
from .run.fork import fork_run
from .run.log import load_run
from .run.memories import Recall, Remembering
from .run.runtime import Runtime, SystemClock
from .run.worker import Worker
from .store.memory import MemoryStore
from .store.open import open_store
from .store.postgres import PostgresStore
from .store.postgres_memory import PostgresMemory
from .store.sqlite import Durability, SqliteStore
from .store.sqlite_memory import SqliteMemory

__version__ = "0.1.0"

__all__ = [
    "END",
    "Budget",
    "ByteBound",
    "ChainBroken",
    "ConfigError",
    "ContextPolicy",
    "DecisionError",
    "DefinitionChanged",
    "Durability",
    "Embedder",
    "Engine",
    "Graph",
    "GraphEngine",
    "GraphResult",
    "HashedEmbedder",
    "LeaseHeld",
    "LeaseLost",
    "Limits",
    "LogNotIntact",
    "ManualClock",
    "Memory",
    "MemoryStore",
    "Message",
    "Model",
    "ModelTurn",
    "NotALog",
    "Phase",
    "Policy",
    "PostgresMemory",
    "PostgresStore",
    "Price",
    "PriceTable",
    "Principal",
    "ProposedCall",
    "RankWeights",
    "Recall",
    "Redaction",
    "Remembering",
    "Retry",
    "ReviewRules",
    "RouterError",
    "RunNotFound",
    "RunResult",
    "RunState",
    "Runtime",
    "SchemaError",
    "ScriptedModel",
    "SeqConflict",
    "SequentialIds",
    "SqliteMemory",
    "SqliteStore",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreLost",
    "SystemClock",
    "Tokenizer",
    "Tool",
    "ToolContext",
    "ToolOutput",
    "Tools",
    "Usage",
    "Worker",
    "fork_run",
    "load_run",
    "open_store",
    "resolve_call",
    "review_graph_run",
    "review_run",
    "tool",
    "verify",
]
