"""What must not be stored never reaches the disk, and the run says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import (
    ConfigError,
    Engine,
    ManualClock,
    Phase,
    Principal,
    Redaction,
    Runtime,
    ScriptedModel,
    SqliteStore,
    Tools,
    load_run,
    tool,
    verify,
)
from router.core.events import RunStarted
from router.export.arrow import export, verify_export
from router.models.scripted import call, say

pytestmark = pytest.mark.anyio
CARD = "4111 1111 1111 1111"
POLICY = Redaction(patterns={"card": r"\b\d{4}(?:[ -]?\d{4}){3}\b"}, fields=("password",))


async def test_secrets_never_reach_the_log_but_the_live_run_uses_them(tmp_path: Path) -> None:
    seen: list[str] = []

    @tool(idempotent=True)
    async def login(user: str, password: str) -> dict[str, str]:
        seen.append(password)
        return {"user": user, "password": password, "card": CARD}

    script = [call("login", '{"user": "ann", "password": "hunter2"}'), say(f"done, card {CARD}")]
    async with SqliteStore.open(tmp_path / "log.db") as store:
        engine = Engine(
            Runtime(store, clock=ManualClock()),
            ScriptedModel(script),
            Tools([login]),
            redaction=POLICY,
        )
        result = await engine.start(f"log in and charge {CARD}", principal=Principal(id="u"))
        assert result.phase is Phase.DONE and seen == ["hunter2"]
        assert result.output == f"done, card {CARD}"  # the caller gets the live answer
        stored = await store.read(result.run_id)
        assert verify(stored) == len(stored)
        events, state, _ = await load_run(store, result.run_id)
        start = events[0]
        assert isinstance(start, RunStarted) and start.redaction.fields == ("password",)
        assert set(start.redaction.patterns) == {"card"}
        assert (
            "[redacted:card]" in start.messages[0].content
            and "[redacted:password]" in stored[-2].payload.decode()
        )
        assert (await engine.replay(result.run_id)).identical
        await export(store, tmp_path / "runs.parquet")
    verify_export([tmp_path / "runs.parquet"])
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert b"hunter2" not in data and CARD.encode() not in data, path.name


async def test_a_different_policy_is_a_different_definition(tmp_path: Path) -> None:
    @tool
    def noop() -> int:
        return 0

    async with SqliteStore.open(tmp_path / "log.db") as store:
        plain = Engine(store, ScriptedModel([say("x")]), Tools([noop]))
        redacting = Engine(store, ScriptedModel([say("x")]), Tools([noop]), redaction=POLICY)
        assert plain.definition != redacting.definition


def test_a_bad_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a regular expression"):
        Redaction(patterns={"bad": "(unclosed"})
    assert not Redaction()
    assert Redaction().apply(b'{"a": 1}') == b'{"a": 1}'
