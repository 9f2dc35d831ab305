"""The SQLite store's tables, the triggers by which the database itself keeps the log
append-only and chained, and the migrations from earlier layouts."""

from __future__ import annotations

__all__ = ["FROM_2", "INSERT", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 3

SCHEMA = f"""
-- A rowid table: rows are appended at the end of its b-tree whichever run they belong
-- to, and ``id`` is the global order of appends (a watermark for incremental export).
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY,
    run_id    TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    payload   BLOB    NOT NULL,
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
CREATE TABLE IF NOT EXISTS runs (
    n      INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE
);
-- A run's lease and its status for workers: owner "" when nobody holds it; token, the
-- run's fencing token, only grows. A row is made by the run's first fenced append.
CREATE TABLE IF NOT EXISTS leases (
    run_id     TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL,
    token      INTEGER NOT NULL DEFAULT 0,
    status     TEXT NOT NULL DEFAULT 'active'
);
CREATE TRIGGER IF NOT EXISTS events_refuse_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'router: the event log is append-only; UPDATE is refused'); END;
CREATE TRIGGER IF NOT EXISTS events_refuse_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'router: the event log is append-only; DELETE is refused'); END;
CREATE TRIGGER IF NOT EXISTS runs_refuse_update BEFORE UPDATE ON runs
BEGIN SELECT RAISE(ABORT, 'router: the run list is append-only; UPDATE is refused'); END;
CREATE TRIGGER IF NOT EXISTS runs_refuse_delete BEFORE DELETE ON runs
BEGIN SELECT RAISE(ABORT, 'router: the run list is append-only; DELETE is refused'); END;
-- Refuses a gap, a negative seq, a prev_hash that is not the previous event's hash, and a
-- repeated seq (which INSERT OR REPLACE would otherwise turn into a silent overwrite).
CREATE TRIGGER IF NOT EXISTS events_continue_chain BEFORE INSERT ON events
WHEN NEW.prev_hash IS NOT (CASE WHEN NEW.seq = 0 THEN zeroblob(32)
    ELSE (SELECT hash FROM events WHERE run_id = NEW.run_id AND seq = NEW.seq - 1) END)
  OR EXISTS (SELECT 1 FROM events WHERE run_id = NEW.run_id AND seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'router: seq or prev_hash does not continue the chain'); END;
-- A lease row changes hands, but is never deleted, and its fencing token never goes back:
-- a writer fenced out stays fenced out whoever edits the table.
CREATE TRIGGER IF NOT EXISTS leases_refuse_delete BEFORE DELETE ON leases
BEGIN SELECT RAISE(ABORT, 'router: a lease is never deleted; DELETE is refused'); END;
CREATE TRIGGER IF NOT EXISTS leases_token_only_grows BEFORE UPDATE ON leases
WHEN NEW.token < OLD.token OR NEW.run_id IS NOT OLD.run_id
BEGIN SELECT RAISE(ABORT, 'router: a lease token only grows; the UPDATE is refused'); END;
CREATE TRIGGER IF NOT EXISTS events_list_run AFTER INSERT ON events WHEN NEW.seq = 0
BEGIN INSERT INTO runs (run_id) VALUES (NEW.run_id); END;
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Version 2 had leases without tokens or statuses. They are added, and every run without
# a lease row gets one as "active": a worker that claims a run that has in fact ended finds
# it so and records its status, once.
FROM_2 = """
ALTER TABLE leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
INSERT INTO leases (run_id, owner, expires_at)
SELECT run_id, '', 0 FROM runs WHERE run_id NOT IN (SELECT run_id FROM leases);
"""

INSERT = (
    "INSERT INTO events (run_id, seq, kind, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
