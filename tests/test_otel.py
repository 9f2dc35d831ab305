"""OpenTelemetry spans for runs, steps, model calls and tool calls (the otel extra)."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from router import (  # noqa: E402
    Engine,
    Limits,
    ManualClock,
    MemoryStore,
    ModelTurn,
    Principal,
    ProposedCall,
    Runtime,
    ScriptedModel,
    Tools,
    Usage,
    tool,
)  # noqa: E402
from router.models.scripted import call, say  # noqa: E402
from router.observe.otel import OtelObserver  # noqa: E402

pytestmark = pytest.mark.anyio


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    return a + b


def tracing() -> tuple[InMemorySpanExporter, OtelObserver]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, OtelObserver(provider.get_tracer("router-test"))


async def test_a_run_becomes_a_tree_of_genai_spans() -> None:
    exporter, observer = tracing()
    turn = ModelTurn(
        tool_calls=(ProposedCall("a", "add", '{"a": 1, "b": 2}'), ProposedCall("b", "nope", "{}")),
        usage=Usage(input_tokens=12, output_tokens=3),
    )
    engine = Engine(
        Runtime(MemoryStore(), clock=ManualClock(10**15, 100), observers=[observer]),
        ScriptedModel([turn, say("3")]),
        Tools([add]),
    )
    result = await engine.start("add", principal=Principal(id="u"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {
        "invoke_agent router",
        "step 1",
        "step 2",
        "chat scripted",
        "execute_tool add",
        "execute_tool nope",
    }
    run = spans["invoke_agent router"]
    assert (
        run.attributes["router.run_id"] == result.run_id
        and run.attributes["router.phase"] == "done"
    )
    step = spans["step 1"]
    assert step.parent.span_id == run.context.span_id
    tool_span = spans["execute_tool add"]
    assert tool_span.parent.span_id == step.context.span_id
    assert tool_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_span.attributes["gen_ai.tool.call.id"] == "a"
    assert spans["execute_tool nope"].status.status_code is StatusCode.ERROR
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat scripted"]
    assert chats[0].attributes["gen_ai.usage.input_tokens"] == 12
    assert all(s.end_time >= s.start_time for s in exporter.get_finished_spans())


async def test_a_limit_ends_the_run_span_with_an_error() -> None:
    exporter, observer = tracing()
    engine = Engine(
        Runtime(MemoryStore(), clock=ManualClock(10**15, 100), observers=[observer]),
        ScriptedModel(lambda m: call("add", f'{{"a": {len(m)}, "b": 1}}')),
        Tools([add]),
    )
    await engine.start("loop", principal=Principal(id="u"), limits=Limits(max_steps=2))
    run = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent router")
    assert run.status.status_code is StatusCode.ERROR and "max_steps" in (
        run.status.description or ""
    )


async def test_a_graph_run_becomes_a_run_span_with_a_span_per_node() -> None:
    from router import END, Graph, GraphEngine

    exporter, observer = tracing()

    async def first(state: dict) -> dict:
        return {"n": 1}

    async def second(state: dict) -> dict:
        raise ValueError("no")

    g = Graph("pipeline")
    g.add_node("first", first)
    g.add_node("second", second)
    g.start("first")
    g.edge("first", "second")
    g.edge("second", END)
    rt = Runtime(MemoryStore(), clock=ManualClock(10**15, 100), observers=[observer])
    ok = GraphEngine(rt, g.compile())
    result = await ok.start({}, principal=Principal(id="u"), run_id="g")
    assert result.phase == "failed"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"run_graph pipeline", "node first", "node second"}
    run = spans["run_graph pipeline"]
    assert (
        run.attributes["router.graph"] == "pipeline" and run.status.status_code is StatusCode.ERROR
    )
    assert spans["node first"].parent.span_id == run.context.span_id
    assert spans["node second"].status.status_code is StatusCode.ERROR


async def test_a_finished_graph_run_ends_its_span_done() -> None:
    from router import END, Graph, GraphEngine

    exporter, observer = tracing()

    async def only(state: dict) -> dict:
        return {"n": 1}

    g = Graph("single")
    g.add_node("only", only)
    g.start("only")
    g.edge("only", END)
    rt = Runtime(MemoryStore(), clock=ManualClock(10**15, 100), observers=[observer])
    assert (
        await GraphEngine(rt, g.compile()).start({}, principal=Principal(id="u"))
    ).phase == "done"
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "run_graph single"]
    assert run.attributes["router.phase"] == "done"
