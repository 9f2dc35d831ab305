"""OpenTelemetry spans for runs, steps, model calls and tool calls, from committed events.

Install the extra: ``pip install "router[otel]"``. Pass ``OtelObserver(tracer)`` in the
runtime's observers (``Runtime(store, observers=[...])``). Spans follow the GenAI semantic
conventions:

    invoke_agent router          a run (router.run_id, router.phase at its end)
      step N                     one model turn and its tool calls
        chat MODEL               gen_ai.operation.name=chat, gen_ai.request.model,
                                 gen_ai.usage.input_tokens, gen_ai.usage.output_tokens
        execute_tool TOOL        gen_ai.operation.name=execute_tool, gen_ai.tool.name,
                                 gen_ai.tool.call.id, router.outcome

    run_graph GRAPH              a graph run (router.run_id, router.graph, router.phase)
      node NAME                  one node of a step (router.step, router.outcome, tokens)

Times come from the events (their ``at`` and recorded latencies), so the spans are the
log's, not the exporter's clock's; a resumed run's spans continue under a new run span.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.events import (
    Event,
    GraphStarted,
    LimitExceeded,
    ModelResponded,
    NodeFailed,
    NodeFinished,
    RunCancelled,
    RunFailed,
    RunStarted,
    StepRouted,
    ToolCallDenied,
    ToolCallRejected,
    ToolCallResolved,
    ToolFailed,
    ToolSucceeded,
)

__all__ = ["OtelObserver"]


class _RunSpans:
    def __init__(self, run: Any) -> None:
        self.run = run
        self.step: Any = None
        self.open_calls: set[str] = set()


class OtelObserver:
    """Emits spans through ``tracer`` (an ``opentelemetry.trace.Tracer``)."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._runs: dict[str, _RunSpans] = {}

    def committed(self, run_id: str, events: Sequence[Event]) -> None:
        for event in events:
            self._on(run_id, event)

    def _ns(self, us: int) -> int:
        return us * 1000

    def _on(self, run_id: str, event: Event) -> None:
        spans = self._runs.get(run_id)
        if spans is None:
            attributes = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "router",
                "router.run_id": run_id,
            }
            if isinstance(event, RunStarted):
                attributes |= {
                    "gen_ai.request.model": event.model,
                    "router.principal": event.principal.id,
                    "gen_ai.agent.name": event.agent or "router",
                }
            name = "invoke_agent router"
            if isinstance(event, GraphStarted):
                name = f"run_graph {event.graph}"
                attributes |= {"router.graph": event.graph, "router.principal": event.principal.id}
            run = self._tracer.start_span(
                name, start_time=self._ns(event.at), attributes=attributes
            )
            spans = self._runs[run_id] = _RunSpans(run)
        if isinstance(event, NodeFinished | NodeFailed):
            self._node(spans, event)
        elif isinstance(event, StepRouted) and not event.next:  # the graph run is done
            spans.run.set_attribute("router.phase", "done")
            spans.run.end(end_time=self._ns(event.at))
            del self._runs[run_id]
        elif isinstance(event, ModelResponded):
            self._model(spans, event)
        elif isinstance(event, ToolSucceeded | ToolFailed | ToolCallRejected | ToolCallDenied):
            self._tool(spans, event)
        elif isinstance(event, ToolCallResolved) and event.decision == "supply":
            spans.open_calls.discard(event.call_id)
        elif isinstance(event, LimitExceeded | RunFailed | RunCancelled):
            self._end(
                run_id,
                spans,
                event.at,
                f"{type(event).__name__}: "
                f"{getattr(event, 'limit', '') or getattr(event, 'reason', '')}",
            )

    def _model(self, spans: _RunSpans, event: ModelResponded) -> None:
        self._end_step(spans, event.at - event.latency_us)
        context = self._trace.set_span_in_context(spans.run)
        begin = self._ns(event.at - event.latency_us)
        spans.step = self._tracer.start_span(
            f"step {event.step}",
            context=context,
            start_time=begin,
            attributes={"router.step": event.step},
        )
        chat = self._tracer.start_span(
            f"chat {event.model}",
            context=self._trace.set_span_in_context(spans.step),
            start_time=begin,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": event.model,
                "gen_ai.response.model": event.model,
                "gen_ai.usage.input_tokens": event.usage.input_tokens,
                "gen_ai.usage.output_tokens": event.usage.output_tokens,
                "router.cost_nusd": event.cost_nusd,
                "router.tool_calls": len(event.tool_calls),
            },
        )
        chat.end(end_time=self._ns(event.at))
        spans.open_calls = {c.id for c in event.tool_calls}
        if not event.tool_calls:  # the answer: the run is done
            self._end_step(spans, event.at)
            spans.run.set_attribute("router.phase", "done")
            spans.run.end(end_time=self._ns(event.at))
            self._runs = {k: v for k, v in self._runs.items() if v is not spans}

    def _tool(
        self,
        spans: _RunSpans,
        event: ToolSucceeded | ToolFailed | ToolCallRejected | ToolCallDenied,
    ) -> None:
        latency = getattr(event, "latency_us", 0)
        if isinstance(event, ToolSucceeded):
            outcome = "succeeded"
        elif isinstance(event, ToolFailed):
            outcome = "timed_out" if event.timed_out else "failed"
        elif isinstance(event, ToolCallRejected):
            outcome = event.code
        else:
            outcome = "denied"
        parent = spans.step if spans.step is not None else spans.run
        span = self._tracer.start_span(
            f"execute_tool {event.tool}",
            context=self._trace.set_span_in_context(parent),
            start_time=self._ns(event.at - latency),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": event.tool,
                "gen_ai.tool.call.id": event.call_id,
                "router.outcome": outcome,
            },
        )
        if outcome != "succeeded":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        span.end(end_time=self._ns(event.at))
        spans.open_calls.discard(event.call_id)
        if not spans.open_calls:
            self._end_step(spans, event.at)

    def _node(self, spans: _RunSpans, event: NodeFinished | NodeFailed) -> None:
        outcome = "succeeded" if isinstance(event, NodeFinished) else "failed"
        span = self._tracer.start_span(
            f"node {event.node}",
            context=self._trace.set_span_in_context(spans.run),
            start_time=self._ns(event.at - event.latency_us),
            attributes={
                "router.step": event.step,
                "router.node": event.node,
                "router.outcome": outcome,
                "router.attempts": event.attempts,
                "gen_ai.usage.input_tokens": event.usage.input_tokens,
                "gen_ai.usage.output_tokens": event.usage.output_tokens,
                "router.cost_nusd": event.cost_nusd,
            },
        )
        if isinstance(event, NodeFailed):
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.error))
        span.end(end_time=self._ns(event.at))

    def _end_step(self, spans: _RunSpans, at: int) -> None:
        if spans.step is not None:
            spans.step.end(end_time=self._ns(at))
            spans.step = None

    def _end(self, run_id: str, spans: _RunSpans, at: int, reason: str) -> None:
        self._end_step(spans, at)
        spans.run.set_status(self._trace.Status(self._trace.StatusCode.ERROR, reason))
        spans.run.set_attribute("router.phase", reason.split(":")[0])
        spans.run.end(end_time=self._ns(at))
        del self._runs[run_id]
