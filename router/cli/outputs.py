"""The files the command line writes: never over a log, a database or a file of another
format, never over anything without ``--force``, the format named by the extension, and
written whole or not at all (a temporary file beside it, renamed into place)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError
from ..export.arrow import SUFFIXES as EXPORT_SUFFIXES

__all__ = ["SUFFIXES", "claim_output", "replacing", "sniff"]

# The file names each format is written to: the export's own, and the pages and figures.
SUFFIXES: dict[str, tuple[str, ...]] = {
    **{str(fmt): suffixes for fmt, suffixes in EXPORT_SUFFIXES.items()},
    "html": (".html", ".htm"),
    "json": (".json",),
}


def sniff(head: bytes) -> str:
    """What a file's first bytes say it is: sqlite, parquet, arrow, html, json, empty or
    unknown."""
    if not head:
        return "empty"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1"):
        return "arrow"
    text = head.lstrip()[:15].lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return "html"
    if text.startswith((b"{", b"[")):
        return "json"
    return "unknown"


def format_of(path: Path, kinds: tuple[str, ...]) -> str:
    """The one of ``kinds`` that the file's extension names. Raises ConfigError."""
    for kind in kinds:
        if path.suffix.lower() in SUFFIXES[kind]:
            return kind
    named = ", ".join(s for kind in kinds for s in SUFFIXES[kind])
    raise ConfigError(f"{path}: the extension names the format to write; use one of {named}")


def claim_output(path: str, kinds: tuple[str, ...], *, force: bool) -> tuple[Path, str]:
    """The path to write and its format (one of ``kinds``, from the extension), once it is
    safe to write there. Refuses, with ConfigError: a missing folder; a SQLite database (the
    log itself among them) or a file of another format (even with ``force``); an existing
    file of the same format unless ``force``."""
    out = Path(path)
    kind = format_of(out, kinds)
    if not out.parent.is_dir():
        raise ConfigError(f"{path}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ConfigError(f"{path} is a folder")
    if not out.exists():
        return out, kind
    with out.open("rb") as f:
        found = sniff(f.read(64))
    if found == "sqlite":
        raise ConfigError(f"{path} is a SQLite database; router never writes over one")
    if found not in ("empty", kind):
        what = "something else" if found == "unknown" else f"a {found} file"
        raise ConfigError(f"{path} holds {what}, not {kind}; router leaves it as it is")
    if not force:
        raise ConfigError(f"{path} exists; pass --force to replace it")
    return out, kind


@contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` to write; renamed over ``out`` if the block ends
    normally, removed if it raises: ``out`` is never left half-written."""
    part = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        yield part
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
