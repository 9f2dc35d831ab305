"""Export runs to Arrow IPC or Parquet, and verify the hash chain from an export alone.

Schema version 1, one row per event, in the order events were appended:

    id          int64      the store's append position (a watermark for incremental export)
    run_id      string
    seq         int64
    kind        string     the event kind (run_started, model_responded, ...)
    at          timestamp  microseconds, UTC, from the run's injected clock
    tool        string     the tool of a tool event, else null
    model       string     the model of run_started, model_responded and context_summarized
    agent       string     the run's agent (the engine's name), null if it has none
    principal   string     the run's principal id
    tokens_in   int64      model_responded and context_summarized only
    tokens_out  int64      model_responded and context_summarized only
    cost_nusd   int64      the same, billionths of a US dollar
    latency_us  int64      model_responded, context_summarized, tool_succeeded, tool_failed
    outcome     string     what happened: tool_calls, answer, forced_answer (at a limit), summary,
                           succeeded, failed, timed_out, a rejection code, denied, a limit's
                           name, a failure code
    prev_hash   binary     32 bytes
    hash        binary     32 bytes
    payload     binary     the stored bytes the hash covers: the canonical event, or its
                           AES-GCM sealed form when the log is encrypted
    encrypted   bool       whether ``payload`` is sealed
    plaintext   binary     the canonical event of a sealed payload, when the export was
                           given the keys; else null

An encrypted log exports with its payloads sealed and its typed columns null (``kind``,
``run_id`` and ``seq`` aside) unless the exporter is given the keys.

The typed columns are derived from the payload; ``verify_export`` recomputes them, so a
filter on them is as trustworthy as the chain. pyarrow is imported only when exporting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..core.chain import GENESIS, link
from ..core.events import (
    ContextSummarized,
    Event,
    LimitExceeded,
    ModelResponded,
    RunFailed,
    RunStarted,
    StoredEvent,
    ToolCallDenied,
    ToolCallRejected,
    ToolFailed,
    ToolStarted,
    ToolSucceeded,
    decode_event,
    kind_of,
)
from ..core.protocols import Cipher, Store
from ..core.stored import decode_plaintext, is_sealed
from ..errors import ChainBroken, ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXPORT_VERSION", "ExportSummary", "export", "export_schema", "verify_export"]

EXPORT_VERSION = "1"
Format = Literal["parquet", "arrow"]
SUFFIXES: dict[Format, tuple[str, ...]] = {  # the file names each format is written to
    "parquet": (".parquet",),
    "arrow": (".arrow", ".feather", ".ipc"),
}
COLUMNS = (
    "id",
    "run_id",
    "seq",
    "kind",
    "at",
    "tool",
    "model",
    "agent",
    "principal",
    "tokens_in",
    "tokens_out",
    "cost_nusd",
    "latency_us",
    "outcome",
    "prev_hash",
    "hash",
    "payload",
    "encrypted",
    "plaintext",
)


class ExportSummary(msgspec.Struct, frozen=True):
    events: int
    runs: int
    watermark: int  # pass as ``after`` to export only what came since
    unreadable: int = 0  # sealed events whose typed columns could not be checked (no key)


def export_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("run_id", pa.string()),
            ("seq", pa.int64()),
            ("kind", pa.string()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("tool", pa.string()),
            ("model", pa.string()),
            ("agent", pa.string()),
            ("principal", pa.string()),
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),
            ("cost_nusd", pa.int64()),
            ("latency_us", pa.int64()),
            ("outcome", pa.string()),
            ("prev_hash", pa.binary(32)),
            ("hash", pa.binary(32)),
            ("payload", pa.binary()),
            ("encrypted", pa.bool_()),
            ("plaintext", pa.binary()),
        ],
        metadata={"router.export.version": EXPORT_VERSION},
    )


def _typed(event: Event, who: tuple[str, str]) -> dict[str, Any]:
    """The typed columns of one event (all but id and the chain columns); ``who`` is the
    run's (agent, principal)."""
    row: dict[str, Any] = {
        "at": event.at,
        "agent": who[0] or None,
        "principal": who[1],
        "tool": None,
        "model": None,
        "tokens_in": None,
        "tokens_out": None,
        "cost_nusd": None,
        "latency_us": None,
        "outcome": None,
    }
    if isinstance(event, ModelResponded | ContextSummarized):
        if isinstance(event, ContextSummarized):
            outcome = "summary"
        else:
            outcome = (
                "forced_answer" if event.forced else "tool_calls" if event.tool_calls else "answer"
            )
        row.update(
            model=event.model,
            tokens_in=event.usage.input_tokens,
            tokens_out=event.usage.output_tokens,
            cost_nusd=event.cost_nusd,
            latency_us=event.latency_us,
            outcome=outcome,
        )
    elif isinstance(event, RunStarted):
        row.update(model=event.model)
    elif isinstance(event, ToolSucceeded):
        row.update(tool=event.tool, latency_us=event.latency_us, outcome="succeeded")
    elif isinstance(event, ToolFailed):
        row.update(
            tool=event.tool,
            latency_us=event.latency_us,
            outcome="timed_out" if event.timed_out else "failed",
        )
    elif isinstance(event, ToolCallRejected):
        row.update(tool=event.tool, outcome=event.code)
    elif isinstance(event, ToolCallDenied):
        row.update(tool=event.tool, outcome="denied")
    elif isinstance(event, ToolStarted):
        row.update(tool=event.tool)
    elif isinstance(event, LimitExceeded):
        row.update(outcome=event.limit)
    elif isinstance(event, RunFailed):
        row.update(outcome=event.code)
    return row


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_pylist(rows, schema=export_schema())


async def export(
    store: Store,
    path: str | Path,
    *,
    format: Format | None = None,
    after: int = 0,
    batch_rows: int = 10_000,
    progress: Callable[[int], None] | None = None,
    cipher: Cipher | None = None,
) -> ExportSummary:
    """Write every event appended after the watermark ``after`` to ``path``, in record
    batches of ``batch_rows`` so that memory stays flat however large the log.

    format: "parquet" or "arrow" (IPC file); by default from the file's suffix.
    progress: called with the number of events written so far, after each batch.
    cipher: opens sealed payloads to fill the typed and plaintext columns.
    """
    path = Path(path)
    fmt = format or _format_of(path)
    if fmt not in ("parquet", "arrow"):
        raise ConfigError(f"unknown export format {fmt!r}: use parquet or arrow")
    writer = _writer(path, fmt)
    principals: dict[str, tuple[str, str]] = {}  # run id -> (agent, principal)
    count, watermark = 0, after
    try:
        while True:
            page = await store.scan(after=watermark, limit=batch_rows)
            if not page:
                break
            rows = await _build_rows(store, page, principals, cipher)
            writer.write_batch(_batch(rows))
            count, watermark = count + len(rows), page[-1][0]
            if progress is not None:
                progress(count)
    finally:
        writer.close()
    return ExportSummary(events=count, runs=len(principals), watermark=watermark)


async def _build_rows(
    store: Store,
    page: list[tuple[int, StoredEvent]],
    principals: dict[str, tuple[str, str]],
    cipher: Cipher | None,
) -> list[dict[str, Any]]:
    """The rows of one page of the log; ``principals`` learns each new run's (agent, principal)."""
    rows = []
    for ident, stored in page:
        sealed = is_sealed(stored.payload)
        row = {
            "id": ident,
            "run_id": stored.run_id,
            "seq": stored.seq,
            "kind": stored.kind,
            "prev_hash": stored.prev_hash,
            "hash": stored.hash,
            "payload": stored.payload,
            "encrypted": sealed,
            "plaintext": None,
        }
        if sealed and cipher is None:
            principals.setdefault(stored.run_id, ("", ""))
            rows.append(row | _NULL_TYPED)
            continue
        plaintext = cipher.open(stored.payload) if sealed and cipher is not None else stored.payload
        event = decode_plaintext(stored, plaintext)
        if stored.run_id not in principals:
            principals[stored.run_id] = await _principal(store, stored.run_id, event, cipher)
        row["plaintext"] = plaintext if sealed else None
        rows.append(row | _typed(event, principals[stored.run_id]))
    return rows


async def _principal(
    store: Store, run_id: str, event: Event, cipher: Cipher | None
) -> tuple[str, str]:
    """The run's (agent, principal), from its run_started event."""
    if isinstance(event, RunStarted):
        return event.agent, event.principal.id
    first = await store.read(run_id, after=-1)
    if not first or (is_sealed(first[0].payload) and cipher is None):
        return "", ""
    start = decode_plaintext(
        first[0], cipher.open(first[0].payload) if cipher is not None else first[0].payload
    )
    return (start.agent, start.principal.id) if isinstance(start, RunStarted) else ("", "")


_NULL_TYPED: dict[str, Any] = {
    "at": None,
    "tool": None,
    "model": None,
    "agent": None,
    "principal": None,
    "tokens_in": None,
    "tokens_out": None,
    "cost_nusd": None,
    "latency_us": None,
    "outcome": None,
}


def _format_of(path: Path) -> Format:
    for fmt, suffixes in SUFFIXES.items():
        if path.suffix in suffixes:
            return fmt
    raise ConfigError(f"{path}: name the format with the extension (.parquet or .arrow) or format=")


class _Writer:
    def __init__(self, write: Callable[[pa.RecordBatch], None], close: Callable[[], None]) -> None:
        self.write_batch, self.close = write, close


def _writer(path: Path, fmt: Format) -> _Writer:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pw = pq.ParquetWriter(path, export_schema(), compression="zstd")
        return _Writer(pw.write_batch, pw.close)
    sink = pa.OSFile(str(path), "wb")
    iw = pa.ipc.new_file(sink, export_schema())

    def close() -> None:
        iw.close()
        sink.close()

    return _Writer(iw.write_batch, close)


def _read_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The export's record batches, with ``at`` as integer microseconds. Raises ConfigError
    for a file that cannot be read whole (truncated, damaged)."""
    import pyarrow as pa

    try:
        yield from _batches(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the export (truncated or damaged?): {exc}") from exc


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the export: {exc}") from exc
    if magic.startswith(b"PAR1"):
        pf = pq.ParquetFile(path)
        _check_version(pf.schema_arrow, path)
        batches: Iterable[pa.RecordBatch] = pf.iter_batches(batch_size=10_000)
    elif magic == b"ARROW1":
        reader = pa.ipc.open_file(str(path))
        _check_version(reader.schema, path)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    else:
        raise ConfigError(f"{path}: not a router export (neither Parquet nor an Arrow IPC file)")
    for batch in batches:
        at = batch.schema.get_field_index("at")
        yield batch.set_column(at, "at", batch.column(at).cast(pa.int64()))


def _check_version(schema: pa.Schema, path: Path) -> None:
    version = (schema.metadata or {}).get(b"router.export.version")
    if version != EXPORT_VERSION.encode():
        raise ConfigError(
            f"{path}: export schema version {version!r}, this router reads {EXPORT_VERSION}"
        )


def verify_export(
    paths: Iterable[str | Path],
    heads: dict[str, tuple[int, bytes]] | None = None,
    cipher: Cipher | None = None,
) -> ExportSummary:
    """Check every run's hash chain from export files alone, in the order given (a full
    export, then incremental ones), and recompute the typed columns from each payload.

    heads: for an incremental export checked on its own, the (seq, hash) each run's chain
    had reached before it. cipher: opens sealed payloads so that their typed columns are
    checked too; without it the chain is still checked, and sealed rows are counted as
    ``unreadable``. Raises ChainBroken naming the first broken link (run, seq).
    """
    state: dict[str, _Head] = {
        run_id: _Head(seq, h, None) for run_id, (seq, h) in (heads or {}).items()
    }
    count, watermark, unreadable = 0, 0, 0
    for path in paths:
        for batch in _read_batches(Path(path)):
            for row in batch.to_pylist():
                unreadable += _verify_row(row, state, cipher)
                count += 1
                watermark = max(watermark, row["id"])
    return ExportSummary(events=count, runs=len(state), watermark=watermark, unreadable=unreadable)


class _Head(msgspec.Struct):
    seq: int
    hash: bytes
    who: tuple[str, str] | None  # (agent, principal), known once the run's run_started row is seen


def _verify_row(row: dict[str, Any], state: dict[str, _Head], cipher: Cipher | None) -> int:
    """Check one row; returns 1 if it is sealed and could not be read, else 0."""
    run_id, seq = row["run_id"], row["seq"]
    head = state.get(run_id) or _Head(-1, GENESIS, None)
    if seq != head.seq + 1:
        raise ChainBroken(run_id, head.seq + 1, f"expected seq {head.seq + 1}, found {seq}")
    if row["prev_hash"] != head.hash:
        raise ChainBroken(run_id, seq, "prev_hash does not match the previous event's hash")
    if link(run_id, seq, row["payload"], head.hash) != row["hash"]:
        raise ChainBroken(run_id, seq, "hash does not match the event's payload")
    sealed = is_sealed(row["payload"])
    if row["encrypted"] != sealed:
        raise ChainBroken(run_id, seq, "column 'encrypted' does not match the payload")
    head.seq, head.hash = seq, row["hash"]
    state[run_id] = head
    if sealed and cipher is None:
        return 1  # the chain holds; what the sealed event says cannot be checked without its key
    plaintext = cipher.open(row["payload"]) if sealed and cipher is not None else row["payload"]
    if sealed and row["plaintext"] is not None and row["plaintext"] != plaintext:
        raise ChainBroken(run_id, seq, "column 'plaintext' does not match the sealed payload")
    try:
        event = decode_event(plaintext)
    except msgspec.DecodeError as exc:
        raise ChainBroken(run_id, seq, f"the payload is not an event: {exc}") from exc
    if isinstance(event, RunStarted):
        head.who = (event.agent, event.principal.id)
    elif head.who is None:  # an incremental export that starts mid-run
        head.who = (row["agent"] or "", row["principal"])
    expected = _typed(event, head.who)
    expected["kind"] = str(kind_of(event))
    for column, value in expected.items():
        if row[column] != value and not (
            sealed and row["plaintext"] is None and row[column] is None
        ):
            raise ChainBroken(run_id, seq, f"column {column!r} does not match the payload")
    return 0
