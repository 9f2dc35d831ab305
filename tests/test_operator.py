"""The operator's command line: outputs that never clobber, read commands that never
write, coded errors instead of tracebacks, anchors, the run list, resume and replay."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import router.cli
from router import Principal, SqliteStore
from router.store.testing import sealed_run

TESTS = Path(__file__).parent


def router_cmd(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
    )


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``router ...`` in-process: its exit code, stdout and stderr."""
    capsys.readouterr()
    code = router.cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("demo")
    result = router_cmd("demo", cwd=cwd)
    assert result.returncode == 0, result.stderr
    run_id = re.search(r"^run (run_\w+)", result.stdout, re.M)
    assert run_id, result.stdout
    return cwd, run_id.group(1)


def a_copy(demo: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """The demo's log (folded whole into one file) copied into tmp_path."""
    cwd, run_id = demo
    for name in ("router.db", "router-crm.sqlite"):
        shutil.copyfile(cwd / name, tmp_path / name)
    conn = sqlite3.connect(tmp_path / "router.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return tmp_path, run_id


# --- 1. outputs never clobber -------------------------------------------------------------


WRITERS = [
    ("export", "--out", "router.db"),
    ("export", "--out", "router.db", "--force"),
    ("report", "--html", "router.db"),
    ("report", "--html", "router.db", "--force"),
    ("show", "RUN", "--html", "router.db", "--force"),
    ("conformance", "CONF", "--json", "router.db", "--force"),
]


@pytest.mark.parametrize("argv", WRITERS, ids=[" ".join(a) for a in WRITERS])
def test_no_command_writes_over_the_log(
    demo: tuple[Path, str],
    tmp_path: Path,
    argv: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, run_id = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    before = files(cwd)
    args = [a.replace("RUN", run_id).replace("CONF", str(TESTS / "conformance")) for a in argv]
    code, _, err = cli(capsys, *args)
    assert code != 0 and re.match(r"router: [a-z_]+: ", err), err
    assert files(cwd) == before  # byte-identical, and nothing new beside it


def test_an_export_picks_its_format_by_extension_and_refuses_others(
    demo: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, _ = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    code, _, err = cli(capsys, "export", "--out", "runs.csv")
    assert code == 1 and "config_error" in err and ".parquet" in err
    assert not (cwd / "runs.csv").exists()
    assert cli(capsys, "export", "--out", "runs.parquet")[0] == 0
    assert (cwd / "runs.parquet").read_bytes()[:4] == b"PAR1"
    assert cli(capsys, "export", "--out", "runs.arrow")[0] == 0
    assert (cwd / "runs.arrow").read_bytes()[:6] == b"ARROW1"
    before = digest(cwd / "runs.parquet")
    code, _, err = cli(capsys, "export", "--out", "runs.parquet")
    assert code == 1 and "--force" in err and digest(cwd / "runs.parquet") == before
    assert cli(capsys, "export", "--out", "runs.parquet", "--force")[0] == 0
    # A file of another format is never written over, --force or not.
    shutil.copyfile(cwd / "runs.arrow", cwd / "fake.parquet")
    code, _, err = cli(capsys, "export", "--out", "fake.parquet", "--force")
    assert code == 1 and "holds a arrow file" in err
    (cwd / "notes.html").write_text("my own notes, not a page")
    code, _, err = cli(capsys, "report", "--html", "notes.html", "--force")
    assert code == 1 and "something else" in err
    assert (cwd / "notes.html").read_text() == "my own notes, not a page"
    assert not [p for p in cwd.iterdir() if p.name.endswith(".partial")]


def test_a_missing_output_folder_is_a_coded_error(
    demo: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, run_id = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    for argv in (
        ("export", "--out", "no/such/x.parquet"),
        ("report", "--html", "no/such/r.html"),
        ("show", run_id, "--html", "no/such/r.html"),
        ("backup", "no/such/copy.db"),
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and "does not exist" in err, (argv, err)


# --- 2. read commands never write -------------------------------------------------------


READERS = [
    ("runs",),
    ("runs", "--json"),
    ("show", "RUN"),
    ("verify",),
    ("heads",),
    ("report",),
    ("replay", "all"),
    ("export", "--out", "out/x.parquet"),
]


@pytest.mark.parametrize("argv", READERS, ids=[" ".join(a) for a in READERS])
def test_read_commands_leave_the_log_byte_identical_while_another_process_writes(
    demo: tuple[Path, str],
    tmp_path: Path,
    argv: tuple[str, ...],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, run_id = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    (cwd / "out").mkdir()
    before = digest(cwd / "router.db")
    writer = sqlite3.connect(cwd / "router.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock throughout
    try:
        code, _, err = cli(capsys, *[a.replace("RUN", run_id) for a in argv])
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert code == 0, err
    assert digest(cwd / "router.db") == before


def another_applications_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("argv", READERS[:6], ids=[" ".join(a) for a in READERS[:6]])
def test_read_commands_refuse_another_applications_database_and_leave_it_alone(
    tmp_path: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    other = another_applications_database(tmp_path / "other.sqlite")
    before = files(tmp_path)
    code, _, err = cli(capsys, *[a.replace("RUN", "r") for a in argv], "--db", str(other))
    assert code == 1 and "not_a_log" in err and "orders" in err
    assert files(tmp_path) == before  # no tables added, not switched to WAL


def test_commands_that_append_refuse_a_database_that_is_not_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = another_applications_database(tmp_path / "other.sqlite")
    before = files(tmp_path)
    for argv in (
        ("unlease", "r"),
        ("fork", "r", "1"),
        ("approve", "r"),
        ("decide", "r", "c", "fail"),
    ):
        code, _, err = cli(capsys, *argv, "--db", str(other))
        assert code == 1 and "not_a_log" in err, (argv, err)
    assert files(tmp_path) == before


# --- 3. coded errors, never a traceback -------------------------------------------------


def test_a_closed_pipe_ends_quietly(demo: tuple[Path, str], tmp_path: Path) -> None:
    cwd, _ = a_copy(demo, tmp_path)
    for _ in range(3):  # `router report | head -1`: the reader goes away early
        proc = subprocess.run(
            f"{sys.executable} -m router report | head -c 10",
            shell=True,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        assert "Traceback" not in proc.stderr and proc.stderr == "", proc.stderr


def test_a_truncated_or_foreign_export_is_a_coded_error(
    demo: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, _ = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    assert cli(capsys, "export", "--out", "all.parquet")[0] == 0
    data = (cwd / "all.parquet").read_bytes()
    for name, cut in (("head.parquet", data[:100]), ("tail.parquet", data[: len(data) // 2])):
        (cwd / name).write_bytes(cut)
        code, _, err = cli(capsys, "verify", "--export", name)
        assert code == 1 and err.startswith("router: config_error:"), err
    code, _, err = cli(capsys, "verify", "--export", "missing.parquet")
    assert code == 1 and err.startswith("router: config_error:"), err


# --- 5. anchors ---------------------------------------------------------------------------


async def many_runs(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        for i in range(5):
            await store.append(sealed_run(f"run-{i}", 6))


def tamper(db: Path, *sql: str) -> None:
    conn = sqlite3.connect(db)
    for trigger in ("events_refuse_update", "events_refuse_delete", "runs_refuse_delete"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")  # an attacker with the file in hand
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()


def rehash(db: Path, run_id: str, from_seq: int) -> None:
    """Rewrite a run's events from a seq on, re-hashed into a chain that verifies."""
    from router.core.chain import GENESIS, link

    conn = sqlite3.connect(db)
    for trigger in ("events_refuse_update", "events_continue_chain"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    rows = conn.execute(
        "SELECT seq, payload FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    ).fetchall()
    head = GENESIS
    for seq, payload in rows:
        if seq >= from_seq:
            payload = payload.replace(b'"at":', b'"at":1')  # another time, another event
        digest_ = link(run_id, seq, payload, head)
        conn.execute(
            "UPDATE events SET payload = ?, prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?",
            (payload, head, digest_, run_id, seq),
        )
        head = digest_
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("how", "expected", "lost"),
    [
        ("cut", "run 'run-1' at seq 4: cut off: anchored events 4..5 (2) lost", 2),
        ("delete-run", "run 'run-2': missing: its 6 anchored event(s) are gone", 6),
        ("rehash", "run 'run-3' at seq 5: rewritten", 6),
        ("kind", "run 'run-4' at seq 2: column kind says 'forged'", 4),
        ("unlisted", "run 'run-0': has events, but is not in the run list", 0),
    ],
)
def test_verify_with_anchors_proves_no_kept_run_was_cut_rewritten_or_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, expected: str, lost: int
) -> None:
    db = tmp_path / "log.db"
    anyio.run(many_runs, db)
    code, out, _ = cli(capsys, "heads", "--db", str(db))
    assert code == 0
    heads = json.loads(out)
    assert set(heads["runs"]) == {f"run-{i}" for i in range(5)}
    assert heads["runs"]["run-0"]["seq"] == 5 and len(heads["runs"]["run-0"]["hash"]) == 64
    (tmp_path / "anchors.json").write_text(out)
    assert (
        cli(capsys, "verify", "--db", str(db), "--anchors", str(tmp_path / "anchors.json"))[0] == 0
    )
    if how == "cut":
        tamper(db, "DELETE FROM events WHERE run_id = 'run-1' AND seq >= 4")
    elif how == "delete-run":
        tamper(
            db,
            "DELETE FROM events WHERE run_id = 'run-2'",
            "DELETE FROM runs WHERE run_id = 'run-2'",
        )
    elif how == "rehash":
        rehash(db, "run-3", 3)
    elif how == "kind":
        tamper(db, "UPDATE events SET kind = 'forged' WHERE run_id = 'run-4' AND seq = 2")
    else:
        tamper(db, "DELETE FROM runs WHERE run_id = 'run-0'")
    if how in ("cut", "delete-run", "rehash"):  # the chains alone still verify
        code, _, err = cli(capsys, "verify", "--db", str(db))
        assert code == 0, err
    code, _, err = cli(
        capsys, "verify", "--db", str(db), "--anchors", str(tmp_path / "anchors.json")
    )
    assert code == 1 and expected in err, err
    assert "router: log_not_intact:" in err
    assert (f"{lost} anchored event(s) lost" in err) == bool(lost), err


def test_anchors_that_are_not_an_anchors_file_are_a_coded_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.db"
    anyio.run(many_runs, db)
    (tmp_path / "bad.json").write_text('{"runs": 3}')
    code, _, err = cli(capsys, "verify", "--db", str(db), "--anchors", str(tmp_path / "bad.json"))
    assert code == 1 and "not an anchors file" in err
    code, _, err = cli(capsys, "verify", "--db", str(db), "--anchors", str(tmp_path / "none.json"))
    assert code == 1 and "cannot read it" in err


def test_leases_cannot_be_deleted_or_wound_back_and_a_hiding_status_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.core.protocols import Fence

    db = tmp_path / "log.db"

    async def fenced() -> None:
        async with SqliteStore.open(db) as store:
            await store.append(sealed_run("r1", 3), fence=Fence("me", 0, 60.0))
            await store.break_lease("r1")

    anyio.run(fenced)
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
        conn.execute("DELETE FROM leases")
    with pytest.raises(sqlite3.IntegrityError, match="only grows"):
        conn.execute("UPDATE leases SET token = 0")
    conn.execute("UPDATE leases SET status = 'ended'")  # hides a live run from every worker
    conn.commit()
    conn.close()
    code, _, err = cli(capsys, "verify", "--db", str(db))
    assert code == 1 and "run 'r1': its lease says 'ended' but its log is still going" in err


# --- 6. the run list, resume, replay, version, the demo's exit status ------------------


def test_runs_shows_status_agent_principal_and_spend_with_filters(
    demo: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cwd, run_id = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)

    async def clerk_run() -> None:
        from cli_agents import clerk

        async with SqliteStore.open(cwd / "router.db") as store:
            await clerk(store).start("pay", principal=Principal(id="bob"), run_id="clerk-1")

    anyio.run(clerk_run)
    code, out, _ = cli(capsys, "runs")
    assert code == 0 and "2 run(s)" in out
    header, demo_row = out.splitlines()[:2]
    assert header.split()[:7] == ["run", "status", "agent", "principal", "started", "steps", "cost"]
    assert demo_row.split()[:3] == [run_id, "done", "support-demo"]
    code, out, _ = cli(capsys, "runs", "--json")
    rows = {r["run"]: r for r in json.loads(out)}
    assert rows[run_id]["cost_usd"] > 0 and rows[run_id]["steps"] >= 3
    assert rows["clerk-1"] | {"started": "", "last_at": ""} == {
        "run": "clerk-1",
        "kind": "agent",
        "status": "awaiting_review",
        "agent": "clerk",
        "principal": "bob",
        "started": "",
        "last_event": "ReviewRequested",
        "last_at": "",
        "events": rows["clerk-1"]["events"],
        "steps": 1,
        "cost_usd": 0.0,
    }
    for filters, expected in (
        (("--status", "awaiting_review"), ["clerk-1"]),
        (("--agent", "support-demo"), [run_id]),
        (("--since", "2999-01-01"), []),
        (("--since", "2000-01-01T00:00"), [run_id, "clerk-1"]),
    ):
        code, out, _ = cli(capsys, "runs", "--json", *filters)
        assert [r["run"] for r in json.loads(out)] == expected, filters
    code, _, err = cli(capsys, "runs", "--since", "yesterday")
    assert code == 1 and "--since" in err


def test_resume_with_the_agent_and_a_migration_and_replay_needs_the_definition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_agents import clerk

    db = str(tmp_path / "log.db")

    async def start() -> None:
        async with SqliteStore.open(db) as store:
            await clerk(store).start("pay", principal=Principal(id="bob"), run_id="r1")

    anyio.run(start)
    code, out, _ = cli(capsys, "resume", "r1", "--agent", "cli_agents:clerk", "--db", db)
    assert code == 0 and "run r1 is now awaiting_review" in out
    assert cli(capsys, "approve", "r1", "--db", db)[0] == 0
    code, _, err = cli(capsys, "resume", "r1", "--agent", "cli_agents:clerk_v2", "--db", db)
    assert code == 1 and "definition_changed" in err and "tool:note" in err
    code, out, _ = cli(
        capsys,
        "resume",
        "r1",
        "--agent",
        "cli_agents:clerk_v2",
        "--migration",
        "add-note",
        "--db",
        db,
    )
    assert code == 0 and "migrated" in out and "run r1 is now done" in out
    code, out, _ = cli(capsys, "replay", "r1", "--db", db)
    assert code == 1 and "not replayed" in out and "--agent" in out and "DIVERGES" not in out
    code, out, _ = cli(capsys, "replay", "r1", "--db", db, "--agent", "cli_agents:clerk_v2")
    assert code == 0 and "r1: identical" in out
    code, _, err = cli(capsys, "resume", "r1", "--agent", "graph_factory:refund_engine", "--db", db)
    assert code == 1 and "agent run" in err
    code, _, err = cli(
        capsys, "resume", "ghost", "--agent", "graph_factory:refund_engine", "--db", db
    )
    assert code == 1 and "run_not_found" in err


def test_version_and_help_name_the_product(tmp_path: Path) -> None:
    from router import __version__

    result = router_cmd("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"router {__version__}"


def test_the_demo_exits_non_zero_when_its_run_does_not_finish_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from router import Limits
    from router.cli import demo as demo_module

    monkeypatch.setattr(demo_module, "LIMITS", Limits(max_steps=1))
    code, out, err = cli(capsys, "demo", "--db", str(tmp_path / "log.db"))
    assert code == 1 and "limit_exceeded" in err, err


def test_license_changelog_and_an_operators_section_ship_with_the_code() -> None:
    root = TESTS.parent
    assert "Apache License" in (root / "LICENSE").read_text()
    assert "Version 2.0" in (root / "LICENSE").read_text()
    assert (
        'license = "Apache-2.0"' in (root / "pyproject.toml").read_text()
        or "Apache-2.0" in (root / "pyproject.toml").read_text()
    )
    changelog = (root / "CHANGELOG.md").read_text()
    from router import __version__

    assert f"## {__version__}" in changelog
    readme = (root / "README.md").read_text()
    assert "## For operators" in readme
    for command in ("router heads", "router verify --anchors", "router runs", "router resume"):
        assert command in readme, command


def test_show_and_report_pages_from_the_command_line_render_in_chromium(
    demo: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from browser import Chromium

    cwd, run_id = a_copy(demo, tmp_path)
    monkeypatch.chdir(cwd)
    assert cli(capsys, "show", run_id, "--html", "run.html")[0] == 0
    assert cli(capsys, "report", "--html", "report.html")[0] == 0
    row = json.loads(cli(capsys, "runs", "--json")[1])[0]
    with Chromium() as browser:
        page = browser.open(cwd / "run.html")
        assert page.evaluate("document.getElementById('run-id').textContent") == run_id
        assert page.evaluate("+document.getElementById('steps').dataset.value") == row["steps"]
        nusd = page.evaluate("+document.getElementById('total-cost').dataset.nusd")
        assert nusd / 1e9 == pytest.approx(row["cost_usd"])
        assert page.evaluate("document.querySelectorAll('div.row.turn').length") == row["steps"]
        report = browser.open(cwd / "report.html")
        assert run_id in report.evaluate("document.body.innerText")
        assert browser.problems == []


def test_a_read_only_copy_in_a_read_only_folder_is_read(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    cwd, run_id = a_copy(demo, tmp_path)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads and writes anything: give that power up first
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root this needs setpriv (util-linux) to give up overriding modes")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    folder = tmp_path / "readonly"
    folder.mkdir()
    shutil.copyfile(cwd / "router.db", folder / "router.db")
    (folder / "router.db").chmod(0o444)

    def read(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [*prefix, sys.executable, "-m", "router", *argv, "--db", "readonly/router.db"]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)

    folder.chmod(0o555)
    try:
        for argv in (("verify",), ("runs",), ("show", run_id), ("heads",), ("report",)):
            result = read(*argv)
            assert result.returncode == 0, (argv, result.stderr)
        assert sorted(p.name for p in folder.iterdir()) == ["router.db"]
        folder.chmod(0o755)
        (folder / "router.db-wal").write_bytes(b"")  # a WAL it cannot take part in
        folder.chmod(0o555)
        result = read("verify")
        assert result.returncode == 1 and "router backup" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        folder.chmod(0o755)
