"""Graph workflows: the definition (pure), the transitions of a graph run (pure) and the
graph engine, which drives graph runs on the run spine."""

from __future__ import annotations

from ..core.graph_fsm import GraphPhase, GraphState, fold_graph
from .definition import END, CompiledGraph, Graph, NodeContext, add, append, merge, replace
from .engine import GraphEngine, GraphResult, subgraph

__all__ = [
    "END",
    "CompiledGraph",
    "Graph",
    "GraphEngine",
    "GraphPhase",
    "GraphResult",
    "GraphState",
    "NodeContext",
    "add",
    "append",
    "fold_graph",
    "merge",
    "replace",
    "subgraph",
]
