"""MCP tools: a real MCP server process (the official SDK), over stdio and streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from router import Engine, MemoryStore, Phase, Policy, Principal, Tools, load_run
from router.core.events import ToolCallDenied, ToolCallRejected, ToolFailed, ToolSucceeded
from router.errors import McpError, SchemaError
from router.mcp import McpClient
from router.models.scripted import ScriptedModel, call, say

pytestmark = pytest.mark.anyio
SERVER = [sys.executable, str(Path(__file__).with_name("mcp_server.py"))]
TELLER = Principal(id="teller", roles=frozenset({"teller"}))
POLICY = Policy({"teller": {"payments:write"}})


@pytest.fixture
async def stdio() -> AsyncIterator[McpClient]:
    async with McpClient.stdio([*SERVER, "stdio"]) as client:
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*SERVER, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(600):  # until the server accepts connections, or it exits
            assert process.poll() is None, "the MCP server exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                import time

                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


async def tools_of(client: McpClient) -> Tools:
    return Tools(
        await client.tools(
            permissions={"transfer": {"payments:write"}},
            idempotent={"balance", "audit.log"},
            timeout_s=0.5,
        ),
        policy=POLICY,
    )


async def test_the_servers_tools_register_with_their_input_schemas(stdio: McpClient) -> None:
    tools = await tools_of(stdio)
    assert tools.names == ("transfer", "balance", "audit_log", "stall")
    transfer = tools["transfer"]
    assert transfer.schema["function"]["parameters"]["properties"]["cents"] == {
        "maximum": 100000,
        "minimum": 1,
        "title": "Cents",
        "type": "integer",
    }
    assert (
        transfer.permissions == {"payments:write"}
        and not transfer.idempotent
        and tools["balance"].idempotent
    )
    assert stdio.info["serverInfo"]["name"] == "ledger"


async def run_script(
    client: McpClient, *turns: Any, principal: Principal = TELLER
) -> tuple[Any, list[Any]]:
    store = MemoryStore()
    engine = Engine(store, ScriptedModel([*turns, say("done")]), await tools_of(client))
    result = await engine.start("pay bob", principal=principal)
    events, _, _ = await load_run(store, result.run_id)
    return result, events


async def test_calls_go_through_validation_access_control_and_the_log(stdio: McpClient) -> None:
    result, events = await run_script(
        stdio,
        call(
            "transfer", '{"source": "alice", "target": "bob", "cents": 0}'
        ),  # refused by router: minimum 1
        call("transfer", '{"source": "alice", "target": "bob", "cents": 250}'),
        call(
            "balance", '{"account": "alice", "currency": "GBP"}'
        ),  # refused by router: not in the enum
        call("balance", '{"account": "alice"}'),
    )
    assert result.phase is Phase.DONE
    rejected = [e for e in events if isinstance(e, ToolCallRejected)]
    assert [(e.path, e.reason) for e in rejected] == [
        ("$.cents", "Expected a number >= 1"),
        ("$.currency", 'Expected one of "USD", "EUR"'),
    ]
    succeeded = [e.result for e in events if isinstance(e, ToolSucceeded)]
    assert succeeded == [
        '{"balance":250,"cents":250,"source":"alice","target":"bob"}',
        '{"result":"alice: 250 cents USD"}',
    ]


async def test_a_principal_without_the_permission_is_denied_before_the_server_is_called(
    stdio: McpClient,
) -> None:
    _, events = await run_script(
        stdio,
        call("transfer", '{"source": "alice", "target": "bob", "cents": 5}'),
        call("balance", '{"account": "alice"}'),
        principal=Principal(id="guest"),
    )
    assert any(isinstance(e, ToolCallDenied) for e in events)
    assert [e.result for e in events if isinstance(e, ToolSucceeded)] == [
        '{"result":"alice: 500 cents USD"}'
    ]


async def test_server_errors_fail_the_call_and_a_stalled_server_times_out(
    stdio: McpClient,
) -> None:
    result, events = await run_script(
        stdio,
        call("transfer", '{"source": "bob", "target": "alice", "cents": 99999}'),
        call("stall", "{}"),
    )
    assert result.phase is Phase.DONE  # the stall is a failed call the model hears of
    failed = [e for e in events if isinstance(e, ToolFailed)]
    assert "bob has only 100 cents" in failed[0].error and not failed[0].timed_out
    assert failed[1].timed_out


async def test_the_streamable_http_transport_registers_and_calls_tools(http_url: str) -> None:
    async with McpClient.http(http_url) as client:
        tools = await tools_of(client)
        assert "audit_log" in tools.names
        assert await client.call_tool("audit.log", {"limit": 2}) == {
            "result": ["entry 0", "entry 1"]
        }
        result, events = await run_script(client, call("balance", '{"account": "bob"}'))
    assert result.phase is Phase.DONE
    assert [e.result for e in events if isinstance(e, ToolSucceeded)] == [
        '{"result":"bob: 100 cents USD"}'
    ]


async def test_a_server_that_cannot_start_or_dies_raises_mcp_error(tmp_path: Path) -> None:
    with pytest.raises(McpError, match="cannot start"):
        async with McpClient.stdio([str(tmp_path / "no-such-server")]):
            pass
    with pytest.raises(McpError, match="exited"):
        async with McpClient.stdio(
            [sys.executable, "-c", "import sys; sys.stdin.readline()"], timeout_s=30
        ):
            pass


RAW = [sys.executable, str(Path(__file__).with_name("mcp_raw_server.py"))]


async def test_a_tool_whose_schema_router_cannot_enforce_is_refused_or_left_out_by_request() -> (
    None
):
    async with McpClient.stdio(RAW) as raw:  # it pages its list and pings the client first
        with pytest.raises(SchemaError, match="unevaluatedProperties"):
            await raw.tools()
        tools = Tools(await raw.tools(skip_refused=True))
        assert tools.names == ("echo",)
        assert "unevaluatedProperties" in raw.refused["strict_echo"]
        assert await raw.call_tool("echo", {"word": "hi"}) == "hi"
        with pytest.raises(McpError, match="no method resources/list"):
            await raw.request("resources/list")


async def test_a_call_the_client_stops_waiting_for_is_cancelled_at_the_server() -> None:
    async with McpClient.stdio(RAW) as raw:
        with anyio.move_on_after(0.2):
            await raw.call_tool("wait", {})
        seen = await raw.call_tool("cancellations", {})
    assert seen == {"ids": [2]}  # request 1 was initialize


async def test_lines_that_are_not_responses_to_our_requests_are_skipped() -> None:
    async with McpClient.stdio(RAW) as raw:
        assert await raw.call_tool("garbled", {}) == "fine"
        assert await raw.call_tool("echo", {"word": "still here"}) == "still here"


def test_the_mcp_example_runs_offline(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "mcp_tools.py"), str(tmp_path / "log.db")],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "=> done" in out and "REJECTED      transfer" in out and "circuit open" in out
    assert "ops has 380.00 left" in out
