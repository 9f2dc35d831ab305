"""The exceptions router raises. Every one is a RouterError with a stable ``code``.

What a model causes (bad arguments, an unknown tool, a denied call) is never an
exception: it is an event in the run's log. Exceptions are for callers and
operators: a wrong configuration, a store that refuses, a chain that does not verify.

    RouterError
    ├── ConfigError          a tool, limit or option is declared wrongly
    │   └── SchemaError      a JSON Schema uses a keyword router does not support
    ├── RunNotFound          no events exist for the run id
    ├── DefinitionChanged    the run was started under another definition
    ├── DecisionError        a decision does not fit the run (no such call, no review)
    ├── KeyMissing           an encrypted event's key was not supplied
    ├── ModelError           a model provider failed, after its retries
    │   ├── ModelRateLimited     429, still limited when the retries were spent
    │   ├── ModelUnavailable     5xx, timeout or a cut connection, after the retries
    │   ├── ModelRequestRejected the provider refused the request (400, 401, 403, 404, 422)
    │   └── ModelResponseInvalid the response does not follow the provider's protocol
    ├── McpError             an MCP server could not be reached or broke the protocol
    └── StoreError           the store refused or failed
        ├── SeqConflict      an append does not continue the run's chain
        ├── LeaseHeld        another owner holds the run's lease
        ├── LeaseLost        our lease lapsed and another owner took the run
        ├── ChainBroken      a stored hash does not match its event
        ├── StoreCorrupt     the database file is damaged (SQLite reports a corrupt page)
        ├── StoreLost        the database file was deleted or replaced while open
        ├── NotALog          the file or database is not a router log
        └── LogNotIntact     an audit of the whole log found problems (router verify)
"""

from __future__ import annotations

__all__ = [
    "ChainBroken",
    "ConfigError",
    "DecisionError",
    "DefinitionChanged",
    "KeyMissing",
    "LeaseHeld",
    "LeaseLost",
    "LogNotIntact",
    "McpError",
    "ModelError",
    "ModelRateLimited",
    "ModelRequestRejected",
    "ModelResponseInvalid",
    "ModelUnavailable",
    "NotALog",
    "RouterError",
    "RunNotFound",
    "SchemaError",
    "SeqConflict",
    "StoreCorrupt",
    "StoreError",
    "StoreLost",
]


class RouterError(Exception):
    """Base of every router exception; ``code`` is stable and documented."""

    code = "router_error"


class ConfigError(RouterError):
    code = "config_error"


class SchemaError(ConfigError):
    code = "schema_error"

    def __init__(self, where: str, keyword: str, reason: str, *, tool: str = "") -> None:
        self.where = where  # a JSON pointer into the schema, "#" for its root
        self.keyword = keyword
        self.reason = reason
        self.tool = tool
        prefix = f"tool {tool!r}: " if tool else ""
        super().__init__(f"{prefix}schema {where}: {keyword + ': ' if keyword else ''}{reason}")


class RunNotFound(RouterError):
    code = "run_not_found"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {run_id!r}")


class DefinitionChanged(RouterError):
    code = "definition_changed"

    def __init__(
        self, run_id: str, recorded: str, current: str, changed: tuple[str, ...] = ()
    ) -> None:
        self.run_id = run_id
        self.recorded = recorded
        self.current = current
        self.changed = changed  # the parts that differ, e.g. ("tool:lookup", "route:classify")
        what = (
            f"changed: {', '.join(changed)}"
            if changed
            else "tools, schemas, code, policy or prices changed"
        )
        super().__init__(
            f"run {run_id!r} was started under definition {recorded[:12]} "
            f"and this engine's is {current[:12]} ({what}); resume it with migration='<name>' "
            "to continue under the new definition, recorded in the log"
        )


class DecisionError(RouterError):
    code = "decision_error"

    def __init__(self, run_id: str, call_id: str, reason: str) -> None:
        self.run_id = run_id
        self.call_id = call_id
        super().__init__(f"run {run_id!r}, call {call_id!r}: {reason}")


class KeyMissing(RouterError):
    code = "key_missing"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"the event is encrypted with key {key_id!r}, which was not supplied")


class ModelError(RouterError):
    code = "model_error"

    def __init__(
        self,
        model: str,
        reason: str,
        *,
        status: int = 0,
        attempts: int = 1,
        retry_after_s: float | None = None,
        route: tuple[object, ...] = (),
    ) -> None:
        self.model = model
        self.route = route  # a routing policy's RouteAttempts when no candidate answered
        self.reason = reason
        self.status = status  # the HTTP status, 0 when no response came
        self.attempts = attempts
        self.retry_after_s = retry_after_s  # what the provider last asked us to wait
        status_text = f" (HTTP {status})" if status else ""
        super().__init__(f"model {model!r}{status_text} after {attempts} attempt(s): {reason}")


class ModelRateLimited(ModelError):
    code = "model_rate_limited"


class ModelUnavailable(ModelError):
    code = "model_unavailable"


class ModelRequestRejected(ModelError):
    code = "model_request_rejected"


class ModelResponseInvalid(ModelError):
    code = "model_response_invalid"


class McpError(RouterError):
    code = "mcp_error"

    def __init__(self, server: str, reason: str) -> None:
        self.server = server
        self.reason = reason
        super().__init__(f"MCP server {server!r}: {reason}")


class StoreError(RouterError):
    code = "store_error"


class SeqConflict(StoreError):
    code = "seq_conflict"

    def __init__(self, run_id: str, seq: int, reason: str) -> None:
        self.run_id = run_id
        self.seq = seq
        super().__init__(f"run {run_id!r}: append at seq {seq} refused: {reason}")


class LeaseHeld(StoreError):
    code = "lease_held"

    def __init__(self, run_id: str, owner: str, until: float = 0.0) -> None:
        self.run_id = run_id
        self.owner = owner
        self.until = until  # when the lease lapses unless renewed, Unix time (0: not known)
        when = f" (its lease runs until Unix time {until:.1f})" if until else ""
        super().__init__(
            f"run {run_id!r} is being advanced by {owner!r}{when}; if that owner is dead, "
            f"`router unlease {run_id}` breaks its lease"
        )


class LeaseLost(StoreError):
    code = "lease_lost"

    def __init__(self, run_id: str, owner: str) -> None:
        self.run_id = run_id
        self.owner = owner
        super().__init__(
            f"the lease on run {run_id!r} that {owner!r} held lapsed and another owner took it; "
            "nothing more was written"
        )


class ChainBroken(StoreError):
    code = "chain_broken"

    def __init__(self, run_id: str, seq: int, reason: str) -> None:
        self.run_id = run_id
        self.seq = seq
        self.reason = reason
        super().__init__(f"run {run_id!r}: chain broken at seq {seq}: {reason}")


class StoreCorrupt(StoreError):
    code = "store_corrupt"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"{path}: the database file is damaged ({reason}); restore it from a backup "
            "(router backup) and check it against your anchors (router verify --anchors)"
        )


class StoreLost(StoreError):
    code = "store_lost"

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: {reason} while the store had it open; nothing more is written, "
            "and what this process appended since it went may be lost"
        )


class NotALog(StoreError):
    code = "not_a_log"

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        super().__init__(f"{where} is not a router log: {reason}")


class LogNotIntact(StoreError):
    code = "log_not_intact"

    def __init__(self, where: str, problems: int, lost: int = 0) -> None:
        self.where = where
        self.problems = problems
        self.lost = lost  # anchored events the log no longer holds or proves
        gone = f"; {lost} anchored event(s) lost" if lost else ""
        super().__init__(f"{where}: {problems} problem(s) found{gone} (each printed above)")
