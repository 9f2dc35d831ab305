"""Export to Parquet and Arrow IPC; verification from the export alone; tampering found."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from router import (
    ChainBroken,
    Engine,
    ManualClock,
    Principal,
    Runtime,
    ScriptedModel,
    SequentialIds,
    SqliteStore,
    Tools,
    tool,
)
from router.core.limits import Price, PriceTable
from router.errors import ConfigError
from router.export.arrow import EXPORT_VERSION, export, verify_export
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio


@tool(inline=True, idempotent=True)
def add(a: int, b: int) -> int:
    return a + b


@tool(permissions={"admin"})
def wipe() -> str:
    return "wiped"


SCRIPT = [call("add", '{"a": 1, "b": 2}'), call("add", '{"a": "x"}'), call("wipe", "{}"), say("3")]


async def make_runs(path: Path, runs: int = 3, start: int = 0) -> None:
    async with SqliteStore.open(path) as store:
        engine = Engine(
            Runtime(store, clock=ManualClock(1_700_000_000_000_000, 7), ids=SequentialIds(start)),
            ScriptedModel(list(SCRIPT)),
            Tools([add, wipe]),
            prices=PriceTable({"scripted": Price(2.0, 8.0)}),
            agent="adder",
        )
        for i in range(runs):
            await engine.start("go", principal=Principal(id=f"user-{i}"))


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
async def test_an_export_verifies_alone_and_has_typed_columns(tmp_path: Path, suffix: str) -> None:
    await make_runs(tmp_path / "log.db")
    out = tmp_path / f"runs{suffix}"
    async with SqliteStore.open(tmp_path / "log.db") as store:
        summary = await export(store, out)
        stored = sum(r.events for r in await store.runs())
    assert (summary.events, summary.runs, summary.watermark) == (stored, 3, stored)
    assert verify_export([out]).events == stored
    table = pq.read_table(out) if suffix == ".parquet" else pa.ipc.open_file(str(out)).read_all()
    assert table.schema.metadata[b"router.export.version"] == EXPORT_VERSION.encode()
    rows = table.to_pylist()
    kinds = [r["kind"] for r in rows if r["run_id"] == rows[0]["run_id"]]
    assert kinds[0] == "run_started" and kinds[-1] == "model_responded"
    rejected = next(r for r in rows if r["kind"] == "tool_call_rejected")
    assert (rejected["tool"], rejected["outcome"]) == ("add", "invalid_arguments")
    denied = next(r for r in rows if r["kind"] == "tool_call_denied")
    assert (denied["tool"], denied["outcome"], denied["principal"]) == ("wipe", "denied", "user-0")
    model = next(r for r in rows if r["kind"] == "model_responded")
    assert model["cost_nusd"] == 0 and model["model"] == "scripted"
    assert {r["agent"] for r in rows} == {"adder"}


async def test_polars_reads_the_export(tmp_path: Path) -> None:
    polars = pytest.importorskip("polars")
    await make_runs(tmp_path / "log.db")
    async with SqliteStore.open(tmp_path / "log.db") as store:
        await export(store, tmp_path / "runs.parquet")
    frame = polars.read_parquet(tmp_path / "runs.parquet")
    outcomes = frame.filter(polars.col("tool") == "add").group_by("outcome").len().sort("outcome")
    assert dict(outcomes.iter_rows()) == {None: 3, "invalid_arguments": 3, "succeeded": 3}


async def test_duckdb_reads_the_parquet_for_cost_and_outcomes_per_tool(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    await make_runs(tmp_path / "log.db")
    async with SqliteStore.open(tmp_path / "log.db") as store:
        await export(store, tmp_path / "runs.parquet")
    query = f"""
        WITH turns AS (
            SELECT *,
                last_value(cost_nusd IGNORE NULLS) OVER (PARTITION BY run_id ORDER BY seq)
                    AS turn_cost
            FROM '{tmp_path / "runs.parquet"}')
        SELECT tool, count(*) FILTER (WHERE outcome = 'succeeded') AS ok,
               count(*) FILTER (WHERE outcome IN ('invalid_arguments', 'denied')) AS refused,
               sum(turn_cost) FILTER (
                   WHERE kind IN ('tool_started', 'tool_call_rejected', 'tool_call_denied')
               ) AS cost
        FROM turns WHERE tool IS NOT NULL GROUP BY tool ORDER BY tool"""
    assert duckdb.sql(query).fetchall() == [("add", 3, 3, 0), ("wipe", 0, 3, 0)]


async def test_incremental_export_continues_from_the_watermark(tmp_path: Path) -> None:
    await make_runs(tmp_path / "log.db", runs=2)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        first = await export(store, tmp_path / "a.parquet")
    await make_runs(tmp_path / "log.db", runs=2, start=10)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        second = await export(store, tmp_path / "b.parquet", after=first.watermark)
        nothing = await export(store, tmp_path / "c.parquet", after=second.watermark)
    assert second.events == first.events and nothing.events == 0
    assert (
        verify_export([tmp_path / "a.parquet", tmp_path / "b.parquet"]).events == 2 * first.events
    )
    assert verify_export([tmp_path / "b.parquet"]).runs == 2  # new runs start at seq 0


def _rewrite(path: Path, change: Any) -> None:
    rows = pq.read_table(path).to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)


def _swap(rows: list[dict[str, Any]]) -> None:
    rows[5], rows[6] = rows[6], rows[5]


@pytest.mark.parametrize(
    ("change", "seq"),
    [
        (
            lambda rows: rows[4].update(
                payload=rows[4]["payload"].replace(b'"step":2', b'"step":7')
            ),
            4,
        ),
        (lambda rows: rows.pop(4), 4),
        (_swap, 5),
        (lambda rows: rows.insert(3, dict(rows[2])), 3),
        (lambda rows: rows[3].update(outcome="failed"), 3),
    ],
    ids=["edit-payload", "delete", "swap", "insert", "edit-typed-column"],
)
async def test_tampering_with_a_parquet_export_names_the_first_broken_link(
    tmp_path: Path, change: Any, seq: int
) -> None:
    await make_runs(tmp_path / "log.db", runs=1)
    async with SqliteStore.open(tmp_path / "log.db") as store:
        await export(store, tmp_path / "runs.parquet")
    _rewrite(tmp_path / "runs.parquet", change)
    with pytest.raises(ChainBroken) as info:
        verify_export([tmp_path / "runs.parquet"])
    assert (info.value.run_id, info.value.seq) == ("run_0", seq)


SQL_TAMPERING = {
    "edit-payload": [
        "UPDATE events "
        "SET payload = CAST(REPLACE(CAST(payload AS TEXT), 'user-0', 'user-9') AS BLOB) "
        "WHERE seq = 0"
    ],
    "delete": ["DELETE FROM events WHERE seq = 4"],
    "swap": [
        "UPDATE events SET seq = -1 WHERE seq = 5",
        "UPDATE events SET seq = 5 WHERE seq = 6",
        "UPDATE events SET seq = 6 WHERE seq = -1",
    ],
    "insert": [
        "INSERT INTO events (run_id, seq, kind, payload, prev_hash, hash) "
        "SELECT run_id, 99, kind, payload, prev_hash, hash FROM events WHERE seq = 2",
        "UPDATE events SET seq = seq + 1 WHERE seq >= 3 AND seq < 99",
        "UPDATE events SET seq = 3 WHERE seq = 99",
    ],
}


@pytest.mark.parametrize(
    ("how", "seq"), [("edit-payload", 0), ("delete", 4), ("swap", 5), ("insert", 3)]
)
def test_router_verify_names_the_first_broken_link_in_a_tampered_log(
    tmp_path: Path, how: str, seq: int
) -> None:
    import anyio

    anyio.run(make_runs, tmp_path / "log.db", 1)
    conn = sqlite3.connect(tmp_path / "log.db")
    for trigger in ("events_refuse_update", "events_refuse_delete", "events_continue_chain"):
        conn.execute(f"DROP TRIGGER {trigger}")  # an attacker with the file in hand
    conn.execute("DROP INDEX events_by_run")
    for sql in SQL_TAMPERING[how]:
        conn.execute(sql)
    conn.commit()
    conn.close()
    result = subprocess.run(
        [sys.executable, "-m", "router", "verify", "--db", str(tmp_path / "log.db")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"FAIL run 'run_0' at seq {seq}: " in result.stderr, result.stderr
    assert "router: log_not_intact:" in result.stderr


def test_the_cli_exports_and_verifies(tmp_path: Path) -> None:
    import anyio

    anyio.run(make_runs, tmp_path / "log.db", 2)
    run = [sys.executable, "-m", "router"]
    out = subprocess.run(
        [*run, "export", "--db", "log.db", "--out", "runs.arrow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "exported 18 event(s) of 2 run(s)" in out and "--after 18" in out
    ok = subprocess.run(
        [*run, "verify", "--export", "runs.arrow"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0 and "2 run(s), 18 event(s)" in ok.stdout
    (tmp_path / "junk.parquet").write_bytes(b"not an export")
    bad = subprocess.run(
        [*run, "verify", "--export", "junk.parquet"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "not a router export" in bad.stderr


def test_an_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    import anyio

    async def go() -> None:
        async with SqliteStore.open(tmp_path / "log.db") as store:
            await export(store, tmp_path / "x.csv", format="csv")  # type: ignore[arg-type]

    with pytest.raises(ConfigError):
        anyio.run(go)
