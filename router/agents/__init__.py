"""Agents that use agents: child agents as tools, handoffs, and multi-agent patterns."""

from __future__ import annotations

from .children import agent_tool, handoff_tool, run_child
from .patterns import debate, negotiation, reflection

__all__ = ["agent_tool", "debate", "handoff_tool", "negotiation", "reflection", "run_child"]
