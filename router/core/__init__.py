"""The pure core: events and their chain, the agent and graph state machines, limits,
access, tools, redaction, definitions, replay, and the protocols adapters implement.
No clock, randomness, OS, event loop or database here: they are injected."""
