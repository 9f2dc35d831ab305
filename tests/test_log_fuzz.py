"""Damage a log at random, then run every read command on it: each exits with a code, none
raises (the command line would print a traceback), and ``verify --anchors`` reports every
anchored event the damage took.

Two kinds of damage, on the image a crash would leave (the database file and its WAL):
random bytes over a page of the database file, and one flipped byte in the WAL, after which
SQLite silently drops every later frame: only the anchors can show what went with them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest

import router.cli
from router import SqliteStore
from router.core.chain import Chain
from router.store.testing import sealed_run

PAGE = 4096
READ_COMMANDS = [
    ("runs",),
    ("runs", "--json"),
    ("show", "old-3"),
    ("show", "new-3"),
    ("verify",),
    ("heads",),
    ("report",),
    ("export", "--out", "OUT/x.parquet"),
    ("replay", "old-1"),
]
CODED = re.compile(r"^router: [a-z_]+: ", re.M)


async def build(folder: Path) -> None:
    """A log whose older runs are in the database file and whose recent commits (new runs,
    and more events of some old ones) are only in the WAL; copied as a crash leaves it."""
    db = folder / "log.db"
    async with SqliteStore.open(db) as store:
        for i in range(12):
            await store.append(sealed_run(f"old-{i}", 6))
    async with SqliteStore.open(db, checkpoint_pages=10**6, checkpoint_s=1e9) as store:
        for i in range(12):
            events = sealed_run(f"new-{i}", 6)
            for k in range(0, 6, 2):
                await store.append(events[k : k + 2])
            if i % 2:
                old = await store.read(f"old-{i}")
                await store.append(sealed_run(f"old-{i}", 3, 6, Chain.after(f"old-{i}", old)))
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{db}{suffix}", folder / f"crash.db{suffix}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """The crash image, its events by run, and the anchors ``router heads`` printed for it."""
    folder = tmp_path_factory.mktemp("image")
    anyio.run(build, folder)
    probe = folder / "probe"
    probe.mkdir()
    copy_image(folder, probe)
    capture = probe / "anchors.json"
    code = run(["heads", "--db", str(probe / "crash.db")], capture)
    assert code == 0
    anchors = json.loads(capture.read_text())
    (folder / "anchors.json").write_text(capture.read_text())
    assert len(anchors["runs"]) == 24
    return folder, anchors["runs"]


def run(argv: list[str], out: Path) -> int:
    """``router ...`` in-process with stdout into ``out``: its exit code. Any exception that
    escapes is a failure of the test (the command line would have printed a traceback)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = router.cli.main(argv)
    out.write_text(buffer.getvalue())
    return code


def copy_image(source: Path, folder: Path) -> Path:
    for suffix in ("", "-wal"):
        shutil.copyfile(source / f"crash.db{suffix}", folder / f"crash.db{suffix}")
    return folder / "crash.db"


def fold_wal(db: Path) -> None:
    """Checkpoint the WAL into the database file, whole."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def write_over(path: Path, start: int, data: bytes) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[start : start + len(data)] = data
    path.write_bytes(bytes(damaged))


def flip(path: Path, offset: int, bit: int) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[offset] ^= 1 << bit
    path.write_bytes(bytes(damaged))


def present(db: Path) -> dict[tuple[str, int], bytes] | None:
    """Every event SQLite still gives, read independently (None if it cannot read them)."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT run_id, seq, hash FROM events").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    return {(run_id, seq): h for run_id, seq, h in rows}


def anchored_lost(anchors: dict[str, dict[str, str]], found: dict[tuple[str, int], bytes]) -> int:
    """Anchored events that are gone: a run's events up to its anchor, missing after the
    first one that is not there, or all of them if the anchor's own hash is not there."""
    lost = 0
    for run_id, anchor in anchors.items():
        kept = anchor["seq"] + 1
        there = 0
        while there < kept and (run_id, there) in found:
            there += 1
        if there < kept:
            lost += kept - there
        elif found[(run_id, anchor["seq"])].hex() != anchor["hash"]:
            lost += kept
    return lost


def check_every_read_command(
    db: Path, folder: Path, anchors: dict[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "OUT").mkdir(exist_ok=True)
    for argv in READ_COMMANDS:
        args = [a.replace("OUT", str(folder / "OUT")) for a in argv]
        capsys.readouterr()
        code = run([*args, "--db", str(db)], folder / "stdout")
        err = capsys.readouterr().err
        assert code in (0, 1, 2), (argv, code)
        assert "Traceback" not in err
        if code:
            assert CODED.search(err), (argv, err)
    capsys.readouterr()
    code = run(
        ["verify", "--db", str(db), "--anchors", str(folder.parent / "anchors.json")], folder / "v"
    )
    err = capsys.readouterr().err
    found = present(db)
    if code == 0:  # nothing anchored may be missing or changed
        assert found is not None and anchored_lost(anchors, found) == 0
        return
    assert CODED.search(err) and "Traceback" not in err, err
    if found is not None and "log_not_intact" in err:
        lost = anchored_lost(anchors, found)
        reported = re.search(r"(\d+) anchored event\(s\) lost", err)
        assert lost == 0 or (reported and int(reported.group(1)) >= lost), (lost, err)


@pytest.mark.parametrize("seed", range(20))
def test_a_flipped_byte_in_the_wal_loses_nothing_the_anchors_do_not_report(
    image: tuple[Path, dict[str, dict[str, str]]],
    tmp_path: Path,
    seed: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, anchors = image
    db = copy_image(source, tmp_path)
    wal = Path(f"{db}-wal")
    rng = random.Random(seed)
    offset = rng.randrange(32 + 24, wal.stat().st_size)  # past the WAL's header: a frame's
    flip(wal, offset, rng.randrange(8))
    found = present(db)
    assert found is not None  # SQLite reads on, without a word: the damage is silent
    lost = anchored_lost(anchors, found)
    check_every_read_command(db, tmp_path, anchors, capsys)
    capsys.readouterr()
    code = run(
        ["verify", "--db", str(db), "--anchors", str(source / "anchors.json")], tmp_path / "v"
    )
    err = capsys.readouterr().err
    if lost:  # exactly the events the dropped frames held, each counted
        assert code == 1 and f"; {lost} anchored event(s) lost" in err, (lost, err)
    else:  # the flipped frame was one that later frames superseded, or past the last commit
        assert code == 0, err


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_over_a_page_of_the_database_are_a_coded_error_or_reported(
    image: tuple[Path, dict[str, dict[str, str]]],
    tmp_path: Path,
    seed: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, anchors = image
    db = copy_image(source, tmp_path)
    fold_wal(db)  # everything in the database file
    rng = random.Random(seed)
    page = rng.randrange(db.stat().st_size // PAGE)
    start = page * PAGE + rng.randrange(PAGE - 64)
    write_over(db, start, rng.randbytes(64))
    check_every_read_command(db, tmp_path, anchors, capsys)


@pytest.mark.parametrize("damage", ["page", "wal"])
def test_the_command_line_itself_prints_a_code_and_no_traceback_on_a_damaged_log(
    image: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path, damage: str
) -> None:
    import subprocess
    import sys

    source, _ = image
    db = copy_image(source, tmp_path)
    if damage == "page":  # a page of the events table (past the schema's) written over
        fold_wal(db)
        write_over(db, 3 * PAGE, random.Random(7).randbytes(PAGE))
    else:
        wal = Path(f"{db}-wal")
        flip(wal, wal.stat().st_size // 3, 4)
    (tmp_path / "OUT").mkdir()
    codes = set()
    for argv in [*READ_COMMANDS, ("verify", "--anchors", str(source / "anchors.json"))]:
        args = [a.replace("OUT", str(tmp_path / "OUT")) for a in argv]
        result = subprocess.run(
            [sys.executable, "-m", "router", *args, "--db", str(db)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        if result.returncode:
            assert CODED.search(result.stderr), (argv, result.stderr)
        codes.add(result.returncode)
    assert 1 in codes, codes  # the damage was seen, by the anchors at least
