"""The run spine: where runs execute (runtime), the one writer of a run's log, the one
attempt loop, the agent engine and the decisions people make on stored runs."""
