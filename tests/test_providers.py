"""OpenAI and Anthropic adapters against a real loopback HTTP server replaying recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from provider_server import RECORDINGS, ProviderServer, Reply, cut_stream, recorded

from router import Engine, MemoryStore, Phase, Principal, Tools, tool
from router.core.events import Message
from router.core.protocols import StreamDelta
from router.core.tools import Retry
from router.errors import (
    ModelRateLimited,
    ModelRequestRejected,
    ModelResponseInvalid,
    ModelUnavailable,
)
from router.models.anthropic import AnthropicModel
from router.models.openai import OpenAIModel

pytestmark = pytest.mark.anyio
FAST = Retry(attempts=3, base_delay_s=0.001, factor=1.0, max_delay_s=0.001)
USER = [Message(role="system", content="Be brief."), Message(role="user", content="What is 2 + 2?")]


@pytest.fixture
async def server() -> AsyncIterator[ProviderServer]:
    with ProviderServer() as running:
        yield running
        for model in running.clients:
            await model.aclose()


@tool(inline=True, idempotent=True)
def lookup_customer(customer_id: int) -> dict[str, Any]:
    """Read a customer."""
    return {"id": customer_id, "name": "Grace Hopper"}


@tool(inline=True, idempotent=True)
def calculate(expression: str) -> float:
    """Evaluate a sum of two integers."""
    left, right = expression.split("+")
    return float(int(left) + int(right))


TOOLS = Tools([lookup_customer, calculate])


def openai(server: ProviderServer, **options: Any) -> OpenAIModel:
    model = OpenAIModel(
        "gpt-4o",
        base_url=server.url,
        api_key="sk-test",
        retry=options.pop("retry", FAST),
        **options,
    )
    server.clients.append(model)
    return model


def anthropic(server: ProviderServer, **options: Any) -> AnthropicModel:
    model = AnthropicModel(
        "claude-sonnet-4-5", base_url=server.url, api_key="ak-test", retry=FAST, **options
    )
    server.clients.append(model)
    return model


async def test_openai_tool_calls_go_both_ways_through_a_run(server: ProviderServer) -> None:
    server.queue(recorded("openai_tool_call.json"), recorded("openai_answer.json"))
    model = openai(server)
    result = await Engine(MemoryStore(), model, TOOLS).start(
        "Refund customer 42?", principal=Principal(id="u")
    )
    assert (result.phase, result.output) == (Phase.DONE, "Customer 42 is due a refund of 1,050.00.")
    first, second = (r["json"] for r in server.requests)
    assert first["tools"][0] == {"type": "function", "function": TOOLS.schemas[0]["function"]}
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test"
    assistant, answer = second["messages"][-2:]
    assert assistant["tool_calls"] == [
        {
            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "type": "function",
            "function": {"name": "lookup_customer", "arguments": '{"customer_id":42}'},
        }
    ]
    assert answer == {
        "role": "tool",
        "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "content": '{"id":42,"name":"Grace Hopper"}',
    }
    assert (result.usage.input_tokens, result.usage.output_tokens) == (412 + 860, 21 + 48)


async def test_malformed_arguments_from_the_model_are_fed_back_not_raised(
    server: ProviderServer,
) -> None:
    server.queue(recorded("openai_malformed_arguments.json"), recorded("openai_answer.json"))
    result = await Engine(MemoryStore(), openai(server), TOOLS).start(
        "go", principal=Principal(id="u")
    )
    assert result.phase is Phase.DONE
    fed_back = server.requests[1]["json"]["messages"][-1]["content"]
    assert fed_back.startswith("error[malformed_json]: the arguments are not JSON")


async def test_429_is_retried_after_the_providers_retry_after(server: ProviderServer) -> None:
    server.queue(
        recorded("openai_rate_limited.json", 429, retry_after_ms="20"),
        recorded("openai_answer.json"),
    )
    turn = await openai(server).respond(USER, [])
    assert turn.text.startswith("Customer 42") and len(server.requests) == 2


async def test_rate_limits_that_outlast_the_retries_raise_model_rate_limited(
    server: ProviderServer,
) -> None:
    server.queue(*[recorded("openai_rate_limited.json", 429, retry_after="0")] * 3)
    with pytest.raises(ModelRateLimited) as caught:
        await openai(server).respond(USER, [])
    assert (caught.value.status, caught.value.attempts, caught.value.retry_after_s) == (429, 3, 0.0)
    assert "rate_limit_exceeded" in str(caught.value) or "tokens: Rate limit" in str(caught.value)


async def test_a_retry_after_beyond_the_ceiling_ends_the_retries_at_once(
    server: ProviderServer,
) -> None:
    server.queue(recorded("openai_rate_limited.json", 429, retry_after="3600"))
    with pytest.raises(ModelRateLimited):
        await openai(server, max_retry_after_s=30).respond(USER, [])
    assert len(server.requests) == 1


async def test_5xx_is_retried_then_raised_as_model_unavailable(server: ProviderServer) -> None:
    server.queue(recorded("openai_server_error.json", 500), recorded("openai_answer.json"))
    assert (await openai(server).respond(USER, [])).text
    server.queue(*[recorded("openai_server_error.json", 503)] * 3)
    with pytest.raises(ModelUnavailable, match="server_error: The server had an error") as caught:
        await openai(server).respond(USER, [])
    assert caught.value.status == 503


async def test_a_rejected_request_is_not_retried(server: ProviderServer) -> None:
    server.queue(recorded("openai_bad_request.json", 400))
    with pytest.raises(
        ModelRequestRejected, match="invalid_request_error: Invalid schema"
    ) as caught:
        await openai(server).respond(USER, [])
    assert (caught.value.status, caught.value.code, len(server.requests)) == (
        400,
        "model_request_rejected",
        1,
    )


async def test_a_provider_that_never_answers_times_out(server: ProviderServer) -> None:
    server.queue(Reply(hang=True), Reply(hang=True))
    with pytest.raises(ModelUnavailable, match="timed out|no complete response"):
        await openai(server, timeout_s=0.2, retry=Retry(attempts=2, base_delay_s=0.001)).respond(
            USER, []
        )
    assert len(server.requests) == 2


async def test_a_cut_connection_is_retried(server: ProviderServer) -> None:
    answer = recorded("openai_answer.json")
    server.queue(Reply(answer.body[:40], cut=True), answer)
    assert (await openai(server).respond(USER, [])).text.startswith("Customer 42")


async def test_a_response_that_is_not_the_protocol_raises_response_invalid(
    server: ProviderServer,
) -> None:
    server.queue(Reply(b'{"choices": "nope"}'))
    with pytest.raises(ModelResponseInvalid):
        await openai(server).respond(USER, [])


async def test_openai_streaming_surfaces_deltas_and_assembles_the_turn(
    server: ProviderServer,
) -> None:
    deltas: list[StreamDelta] = []
    server.queue(recorded("openai_stream.sse"), recorded("openai_stream_text.sse"))
    model = openai(server, stream=True, on_delta=deltas.append)
    result = await Engine(MemoryStore(), model, TOOLS).start("2 + 2?", principal=Principal(id="u"))
    assert (result.phase, result.output) == (Phase.DONE, "It is 4.")
    assert server.requests[0]["json"]["stream"] is True
    assert "".join(d.arguments for d in deltas) == '{"expression": "2 + 2"}'
    assert {d.run_id for d in deltas} == {
        result.run_id
    }  # a shared adapter tags each piece with its run
    assert [d.text for d in deltas if d.text] == ["It is", " 4."]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (120 + 150, 17 + 4)


async def test_a_stream_cut_midway_restarts_and_marks_the_new_attempt(
    server: ProviderServer,
) -> None:
    deltas: list[StreamDelta] = []
    server.queue(cut_stream("openai_stream_text.sse"), recorded("openai_stream_text.sse"))
    turn = await openai(server, stream=True, on_delta=deltas.append).respond(USER, [])
    assert turn.text == "It is 4."
    assert "".join(d.text for d in deltas if d.attempt == 2) == "It is 4."


async def test_many_calls_share_one_pooled_connection(server: ProviderServer) -> None:
    server.queue(*[recorded("openai_answer.json")] * 4)
    model = openai(server)
    for _ in range(4):
        await model.respond(USER, [])
    assert len({r["port"] for r in server.requests}) == 1


async def test_azure_style_query_parameters_and_headers_are_sent(server: ProviderServer) -> None:
    server.queue(recorded("openai_answer.json"))
    await openai(server, params={"api-version": "2024-10-21"}, headers={"api-key": "az"}).respond(
        USER, []
    )
    assert server.requests[0]["query"] == "api-version=2024-10-21"
    assert server.requests[0]["headers"]["api-key"] == "az"


async def test_anthropic_tool_use_and_results_follow_the_messages_protocol(
    server: ProviderServer,
) -> None:
    server.queue(recorded("anthropic_tool_use.json"), recorded("anthropic_answer.json"))
    result = await Engine(MemoryStore(), anthropic(server), TOOLS).start(
        "Refund customer 42?",
        principal=Principal(id="u"),
    )
    assert (result.phase, result.output) == (Phase.DONE, "Grace Hopper is due 1,050.00.")
    first, second = (r["json"] for r in server.requests)
    assert server.requests[0]["headers"]["x-api-key"] == "ak-test"
    assert server.requests[0]["headers"]["anthropic-version"] == "2023-06-01"
    assert first["tools"][0]["input_schema"] == TOOLS.schemas[0]["function"]["parameters"]
    assert first["max_tokens"] == 4096
    assistant, results = second["messages"][-2:]
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "toolu_01A09q90qw90lq917835lq9",
        "name": "lookup_customer",
        "input": {"customer_id": 42},
    }
    assert results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                "content": '{"id":42,"name":"Grace Hopper"}',
            }
        ],
    }
    assert result.usage.input_tokens == 472 + 610


async def test_anthropic_system_text_is_separate_and_turns_alternate(
    server: ProviderServer,
) -> None:
    server.queue(recorded("anthropic_answer.json"))
    await anthropic(server).respond([*USER, Message(role="user", content="And 3 + 3?")], [])
    body = server.requests[0]["json"]
    assert body["system"] == "Be brief."
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert [b["text"] for b in body["messages"][0]["content"]] == ["What is 2 + 2?", "And 3 + 3?"]


async def test_anthropic_streaming_assembles_text_and_tool_input(server: ProviderServer) -> None:
    deltas: list[StreamDelta] = []
    server.queue(recorded("anthropic_stream.sse"))
    turn = await anthropic(server, stream=True, on_delta=deltas.append).respond(USER, TOOLS.schemas)
    assert turn.text == "Let me compute that."
    (call,) = turn.tool_calls
    assert (call.id, call.name, call.arguments) == (
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "calculate",
        '{"expression": "2 + 2"}',
    )
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (472, 89)
    assert [d.call_name for d in deltas if d.call_name] == ["calculate"]


async def test_anthropic_overloaded_is_retried_and_auth_errors_are_not(
    server: ProviderServer,
) -> None:
    server.queue(recorded("anthropic_overloaded.json", 529), recorded("anthropic_answer.json"))
    assert (await anthropic(server).respond(USER, [])).text == "Grace Hopper is due 1,050.00."
    server.queue(recorded("anthropic_auth.json", 401))
    with pytest.raises(ModelRequestRejected, match="authentication_error: invalid x-api-key"):
        await anthropic(server).respond(USER, [])


async def test_a_run_whose_provider_stays_down_fails_with_the_mapped_error(
    server: ProviderServer,
) -> None:
    server.queue(*[recorded("openai_server_error.json", 502)] * 3)
    engine = Engine(MemoryStore(), openai(server), TOOLS, model_retry=Retry(attempts=1))
    result = await engine.start("go", principal=Principal(id="u"))
    assert result.phase is Phase.FAILED
    assert "ModelUnavailable" in result.reason and "HTTP 502" in result.reason


def router_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "router", *args], cwd=cwd, capture_output=True, text=True, env=env
    )


async def test_the_demo_runs_against_any_openai_compatible_server(
    server: ProviderServer, tmp_path: Path
) -> None:
    server.queue(
        recorded("openai_tool_call.json"),
        recorded("openai_malformed_arguments.json"),
        recorded("openai_answer.json"),
    )
    done = await anyio.to_thread.run_sync(
        router_cli, tmp_path, "demo", "--model", "openai", "--base-url", server.url
    )
    assert done.returncode == 0, done.stderr
    assert "lookup_customer" in done.stdout and "malformed_json" in done.stdout
    assert "Customer 42 is due a refund of 1,050.00." in done.stdout
    assert [t["function"]["name"] for t in server.requests[0]["json"]["tools"]] == [
        "calculate",
        "lookup_customer",
        "issue_refund",
    ]
    assert server.requests[0]["json"]["model"] == "gpt-4o-mini"
    assert "authorization" not in server.requests[0]["headers"]  # no key set, none sent
    verified = await anyio.to_thread.run_sync(router_cli, tmp_path, "verify")
    assert verified.returncode == 0, verified.stderr


async def test_the_demo_streams_the_models_text(server: ProviderServer, tmp_path: Path) -> None:
    server.queue(recorded("openai_stream.sse"), recorded("openai_stream_text.sse"))
    done = await anyio.to_thread.run_sync(
        router_cli,
        tmp_path,
        "demo",
        "--model",
        "openai",
        "--base-url",
        server.url,
        "--stream",
        "--model-name",
        "local",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("It is 4.")


async def test_concurrent_runs_sharing_one_adapter_get_their_own_deltas(
    server: ProviderServer,
) -> None:
    deltas: list[StreamDelta] = []
    server.queue(*[recorded("openai_stream_text.sse")] * 2)
    model = openai(server, stream=True, on_delta=deltas.append)
    engine = Engine(MemoryStore(), model, TOOLS)
    results: list[Any] = []

    async def one() -> None:
        results.append(await engine.start("2 + 2?", principal=Principal(id="u")))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
    for result in results:
        assert "".join(d.text for d in deltas if d.run_id == result.run_id) == "It is 4."


async def test_cost_is_priced_at_the_model_asked_and_the_served_snapshot_is_recorded(
    server: ProviderServer,
) -> None:
    from router import Price, PriceTable, load_run
    from router.core.events import ModelResponded

    server.queue(recorded("openai_tool_call.json"), recorded("openai_answer.json"))
    store = MemoryStore()
    prices = PriceTable({"gpt-4o": Price(input_per_mtok=2.5, output_per_mtok=10.0)}, strict=True)
    result = await Engine(store, openai(server), TOOLS, prices=prices).start(
        "go", principal=Principal(id="u")
    )
    assert result.cost_usd == pytest.approx(((412 + 860) * 2.5 + (21 + 48) * 10.0) / 1e6)
    events, _, _ = await load_run(store, result.run_id)
    responded = [e for e in events if isinstance(e, ModelResponded)]
    assert {(e.model, e.served_model) for e in responded} == {("gpt-4o", "gpt-4o-2024-08-06")}


async def test_a_refusal_is_the_models_answer(server: ProviderServer) -> None:
    server.queue(recorded("openai_refusal.json"))
    turn = await openai(server).respond(USER, [])
    assert turn.text == "I'm sorry, I can't help with moving money without an approval."


async def test_a_stream_that_falls_silent_is_retried_and_one_that_keeps_coming_is_not_cut(
    server: ProviderServer,
) -> None:
    from provider_server import stalled_stream

    deltas: list[StreamDelta] = []
    server.queue(stalled_stream("openai_stream_text.sse"), recorded("openai_stream_text.sse"))
    model = openai(server, stream=True, on_delta=deltas.append, timeout_s=1.0)
    assert (await model.respond(USER, [])).text == "It is 4."
    assert len(server.requests) == 2 and {d.attempt for d in deltas} == {1, 2}
    assert model.transport.max_stream_s is None  # no cap on a whole stream unless asked for


async def test_anthropic_leaves_out_an_empty_assistant_turn(server: ProviderServer) -> None:
    server.queue(recorded("anthropic_answer.json"))
    await anthropic(server).respond(
        [
            *USER,
            Message(role="assistant", content=""),
            Message(role="user", content="Please answer."),
        ],
        [],
    )
    messages = server.requests[0]["json"]["messages"]
    assert [m["role"] for m in messages] == ["user"]
    assert [b["text"] for b in messages[0]["content"]] == ["What is 2 + 2?", "Please answer."]


async def test_a_server_that_ignores_stream_and_answers_in_one_piece_is_understood(
    server: ProviderServer,
) -> None:
    deltas: list[StreamDelta] = []
    server.queue(recorded("openai_answer.json"), recorded("anthropic_answer.json"))
    turn = await openai(server, stream=True, on_delta=deltas.append).respond(USER, [])
    assert (
        turn.text == "Customer 42 is due a refund of 1,050.00."
        and turn.served_model == "gpt-4o-2024-08-06"
    )
    claude = await anthropic(server, stream=True, on_delta=deltas.append).respond(USER, [])
    assert claude.text == "Grace Hopper is due 1,050.00."
    assert [d.text for d in deltas] == [turn.text, claude.text]


async def test_a_runs_cap_on_the_answer_goes_in_the_request(server: ProviderServer) -> None:
    server.queue(recorded("openai_answer.json"), recorded("openai_answer.json"))
    await openai(server, options={"max_completion_tokens": 500}).respond(USER, [], max_tokens=80)
    await openai(server, max_tokens_field="max_tokens").respond(USER, [], max_tokens=90)
    first, second = (r["json"] for r in server.requests)
    assert first["max_completion_tokens"] == 80 and "max_tokens" not in first
    assert second["max_tokens"] == 90
    server.queue(recorded("anthropic_answer.json"), recorded("anthropic_answer.json"))
    await anthropic(server).respond(USER, [], max_tokens=70)
    await anthropic(server, max_tokens=50).respond(USER, [], max_tokens=70)
    assert [r["json"]["max_tokens"] for r in server.requests[2:]] == [70, 50]


async def test_embeddings_come_back_in_input_order_and_are_checked(server: ProviderServer) -> None:
    from router.models.embeddings import OpenAIEmbedder

    embedder = OpenAIEmbedder(base_url=server.url, api_key="sk-test", dimensions=8, retry=FAST)
    server.clients.append(embedder)
    server.queue(recorded("openai_embeddings.json"))
    vectors = await embedder.embed(["refund the charge", "weather in Oslo"])
    answer = json.loads((RECORDINGS / "openai_embeddings.json").read_text())["data"]
    by_index = {d["index"]: d["embedding"] for d in answer}
    assert vectors == [by_index[0], by_index[1]]  # the response listed them out of order
    sent = server.requests[0]["json"]
    assert sent["input"] == ["refund the charge", "weather in Oslo"] and sent["dimensions"] == 8
    server.queue(recorded("openai_embeddings.json"))
    with pytest.raises(ModelResponseInvalid, match="asked for 3 embeddings"):
        await embedder.embed(["a", "b", "c"])
    wide = OpenAIEmbedder(base_url=server.url, api_key="k", dimensions=16, retry=FAST)
    server.clients.append(wide)
    server.queue(recorded("openai_embeddings.json"))
    with pytest.raises(ModelResponseInvalid, match="8 dimensions, not 16"):
        await wide.embed(["a", "b"])
