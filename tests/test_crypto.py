"""Encryption at rest (the encryption extra): sealed payloads, a chain that verifies without
the key, key rotation, and exports that stay sealed unless given the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography")

from router import (  # noqa: E402
    ChainBroken,
    ConfigError,
    Engine,
    ManualClock,
    Phase,
    Principal,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    load_run,
    tool,
    verify,
)  # noqa: E402
from router.crypto import AesGcmCipher, key_id_of  # noqa: E402
from router.errors import KeyMissing  # noqa: E402
from router.export.arrow import export, verify_export  # noqa: E402
from router.models.scripted import call, say  # noqa: E402

pytestmark = pytest.mark.anyio
K1, K2 = os.urandom(32), os.urandom(16)
SECRET = "account 99-1234 belongs to Grace"


@tool(inline=True, idempotent=True)
def lookup(n: int) -> str:
    return SECRET


def engine(store: SqliteStore, cipher: AesGcmCipher | None, script: list) -> Engine:  # type: ignore[type-arg]
    return Engine(
        Runtime(store, clock=ManualClock(1, 1), cipher=cipher),
        ScriptedModel(script),
        Tools([lookup]),
    )


async def test_sealed_events_verify_without_the_key_and_read_with_it(tmp_path: Path) -> None:
    cipher = AesGcmCipher({"k1": K1}, active="k1")
    async with SqliteStore.open(tmp_path / "log.db") as store:
        eng = engine(store, cipher, [call("lookup", '{"n": 1}'), say("found")])
        result = await eng.start(SECRET, principal=Principal(id="u"))
        stored = await store.read(result.run_id)
        assert all(s.payload[:1] == b"\x01" and key_id_of(s.payload) == "k1" for s in stored)
        assert verify(stored) == len(stored)  # integrity without the key
        with pytest.raises(KeyMissing):
            await load_run(store, result.run_id)
        _, state, _ = await load_run(store, result.run_id, cipher)
        assert state.phase is Phase.DONE
        assert (await eng.replay(result.run_id)).identical
    assert SECRET.encode() not in (tmp_path / "log.db").read_bytes()


async def test_keys_rotate_and_old_events_need_the_old_key(tmp_path: Path) -> None:
    class Crash(BaseException):
        pass

    def crash_second(messages: object) -> object:
        raise Crash

    async with SqliteStore.open(tmp_path / "log.db") as store:
        first = AesGcmCipher({"k1": K1}, active="k1")
        with pytest.raises(Crash):
            # run_started is committed under k1, then the process dies at the first model call
            await Engine(
                Runtime(store, cipher=first, owner="o"),
                ScriptedModel(crash_second),  # type: ignore[arg-type]
                Tools([lookup]),
            ).start("go", principal=Principal(id="u"), run_id="r")
        await store.release_lease("r", "o")
        rotated = AesGcmCipher({"k2": K2, "k1": K1}, active="k2")
        result = await engine(store, rotated, [say("done")]).resume("r")
        assert result.phase is Phase.DONE
        ids = {key_id_of(s.payload) for s in await store.read("r")}
        assert ids == {"k1", "k2"}
        with pytest.raises(KeyMissing) as info:
            await load_run(store, "r", AesGcmCipher({"k2": K2}, active="k2"))
        assert info.value.key_id == "k1"


async def test_exports_stay_sealed_unless_given_the_key(tmp_path: Path) -> None:
    cipher = AesGcmCipher({"k1": K1}, active="k1")
    async with SqliteStore.open(tmp_path / "log.db") as store:
        await engine(store, cipher, [call("lookup", '{"n": 1}'), say("found")]).start(
            "go", principal=Principal(id="u")
        )
        sealed = await export(store, tmp_path / "sealed.parquet")
        opened = await export(store, tmp_path / "opened.parquet", cipher=cipher)
    assert SECRET.encode() not in (tmp_path / "sealed.parquet").read_bytes()
    summary = verify_export([tmp_path / "sealed.parquet"])
    assert summary.events == sealed.events and summary.unreadable == sealed.events
    assert verify_export([tmp_path / "sealed.parquet"], cipher=cipher).unreadable == 0
    assert verify_export([tmp_path / "opened.parquet"], cipher=cipher).events == opened.events

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "opened.parquet").to_pylist()
    tool_row = next(r for r in rows if r["kind"] == "tool_succeeded")
    assert (
        tool_row["tool"] == "lookup"
        and tool_row["encrypted"]
        and SECRET.encode() in tool_row["plaintext"]
    )
    tool_row["plaintext"] = tool_row["plaintext"].replace(b"Grace", b"Alan!")
    pq.write_table(
        pa.Table.from_pylist(rows, schema=pq.read_schema(tmp_path / "opened.parquet")),
        tmp_path / "forged.parquet",
    )
    with pytest.raises(ChainBroken, match="plaintext"):
        verify_export([tmp_path / "forged.parquet"], cipher=cipher)


def test_bad_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        AesGcmCipher({"k": b"short"}, active="k")
    with pytest.raises(ConfigError):
        AesGcmCipher({"k": K1}, active="other")
    wrong = AesGcmCipher({"k1": os.urandom(32)}, active="k1")
    sealed = AesGcmCipher({"k1": K1}, active="k1").seal(b'{"kind":"x"}')
    with pytest.raises(ConfigError, match="wrong key or altered"):
        wrong.open(sealed)


def test_the_cli_reads_keys_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "ROUTER_KEYS": f"k1={K1.hex()}"}
    run = [sys.executable, "-m", "router"]
    subprocess.run([*run, "demo"], cwd=tmp_path, env=env, check=True, capture_output=True)
    bare = {k: v for k, v in os.environ.items() if k != "ROUTER_KEYS"}
    ok = subprocess.run([*run, "verify"], cwd=tmp_path, env=bare, capture_output=True, text=True)
    assert ok.returncode == 0 and "checked by hash only" in ok.stdout
    report = subprocess.run(
        [*run, "report"], cwd=tmp_path, env=bare, capture_output=True, text=True
    )
    assert report.returncode == 1 and "key_missing" in report.stderr
    assert (
        subprocess.run([*run, "report"], cwd=tmp_path, env=env, capture_output=True).returncode == 0
    )
    listed = subprocess.run([*run, "runs"], cwd=tmp_path, env=bare, capture_output=True, text=True)
    assert listed.returncode == 0 and "0 run(s)" in listed.stdout
    assert "1 sealed run(s) not shown: set ROUTER_KEYS" in listed.stdout
    listed = subprocess.run([*run, "runs"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "1 run(s)" in listed.stdout and "support-demo" in listed.stdout
