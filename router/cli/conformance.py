"""How strictly router's JSON Schema compiler follows the standard and real tool schemas.

Two bodies of test data, read from a folder (``router conformance DIR``):

- ``json-schema-test-suite/draft2020-12``: the official JSON Schema test suite. Per keyword
  file: tests passed and failed among the schemas router compiles, and tests whose schema
  router refuses at registration (a keyword it does not support, named in the reason).
- ``tool-schemas/bfcl``: real tool definitions from the Berkeley Function Calling
  Leaderboard, compiled with ``schema.BFCL``, with argument objects that must be accepted
  and mutations that must be rejected. Accept rows that BFCL's answer key and its own
  schema disagree on (``schema_conflict``) are counted apart.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import orjson

from ..errors import SchemaError
from ..schema.compiler import BFCL, CompiledSchema, compile_schema

__all__ = [
    "KeywordResult",
    "ToolSchemaResult",
    "check_suite",
    "check_tool_schemas",
    "conforms",
    "render",
]

# The suite's files for keywords router refuses at registration; every other file tests
# something router supports and must pass in full.
UNSUPPORTED = frozenset(
    {
        "anchor",
        "content",
        "dynamicRef",
        "refRemote",
        "unevaluatedItems",
        "unevaluatedProperties",
        "vocabulary",
    }
)


class KeywordResult(msgspec.Struct, frozen=True):
    file: str
    supported: bool  # the file's keyword is one router supports
    passed: int
    failed: int
    refused: int  # tests whose schema router refuses at registration
    failures: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()  # the distinct reasons

    @property
    def rate(self) -> float:
        ran = self.passed + self.failed
        return self.passed / ran if ran else 0.0


class ToolSchemaResult(msgspec.Struct, frozen=True):
    tools: int
    compiled: int
    accept_total: int
    accepted: int
    conflict_total: int  # accept rows where BFCL's answer key disagrees with its own schema
    conflict_accepted: int
    reject_total: int
    rejected: int
    wrongly_refused: tuple[str, ...] = ()  # clean accept rows that were refused, with why
    wrongly_accepted: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()  # how each refused conflict row failed


def check_suite(folder: Path, *, draft: str = "") -> list[KeywordResult]:
    """Run every test file of the official suite in ``folder`` (draft 2020-12; or, with
    ``draft``, a ``$schema`` URL each schema is declared under, such as draft 7's)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no test files in {folder}")
    return [_check_file(path, draft) for path in files]


def _check_file(path: Path, draft: str = "") -> KeywordResult:
    passed = failed = refused = 0
    failures: list[str] = []
    refusals: set[str] = set()
    for group in orjson.loads(path.read_bytes()):
        schema = group["schema"]
        if draft and isinstance(schema, dict):
            schema = {"$schema": draft, **schema}
        try:
            compiled = compile_schema(schema)
        except SchemaError as exc:
            refused += len(group["tests"])
            refusals.add(f"{exc.keyword}: {exc.reason}")
            continue
        for test in group["tests"]:
            if _accepts(compiled, test["data"]) == test["valid"]:
                passed += 1
            else:
                failed += 1
                failures.append(f"{group['description']}: {test['description']}")
    return KeywordResult(
        file=path.name,
        supported=path.stem not in UNSUPPORTED,
        passed=passed,
        failed=failed,
        refused=refused,
        failures=tuple(failures),
        refusals=tuple(sorted(refusals)),
    )


def _accepts(compiled: CompiledSchema, data: Any) -> bool:
    """Decide as a tool call is decided: from JSON text, through msgspec's exact types when
    the schema has them and the precompiled checks otherwise."""
    return _why_refused(compiled, data) is None


def check_tool_schemas(folder: Path) -> ToolSchemaResult:
    """Compile every BFCL tool in ``folder`` and check its accept and reject cases."""
    tools: dict[str, Any] = {}
    compiled = 0
    for line in (folder / "tools.jsonl").read_bytes().splitlines():
        row = orjson.loads(line)
        try:
            tools[row["tool_id"]] = compile_schema(row["parameters"], BFCL)
            compiled += 1
        except SchemaError as exc:
            tools[row["tool_id"]] = exc
    accept = [
        orjson.loads(line) for line in (folder / "derived/accept.jsonl").read_bytes().splitlines()
    ]
    reject = [
        orjson.loads(line) for line in (folder / "derived/reject.jsonl").read_bytes().splitlines()
    ]
    refused_clean: list[str] = []
    conflicts: Counter[str] = Counter()
    accepted = conflict_accepted = 0
    for row in accept:
        why = _why_refused(tools[row["tool_id"]], row["arguments"])
        conflict = "schema_conflict" in row
        if why is None:
            accepted += 1
            conflict_accepted += conflict
        elif conflict:
            conflicts[why.split(" - at ")[0]] += 1
        else:
            refused_clean.append(f"{row['case_id']} ({row['variant']}): {why}")
    wrongly_accepted = [
        f"{row['case_id']} ({row['mutation']})"
        for row in reject
        if _why_refused(tools[row["tool_id"]], row["arguments"]) is None
    ]
    return ToolSchemaResult(
        tools=len(tools),
        compiled=compiled,
        accept_total=len(accept),
        accepted=accepted,
        conflict_total=sum("schema_conflict" in row for row in accept),
        conflict_accepted=conflict_accepted,
        reject_total=len(reject),
        rejected=len(reject) - len(wrongly_accepted),
        wrongly_refused=tuple(refused_clean),
        wrongly_accepted=tuple(wrongly_accepted),
        conflicts=tuple(f"{n} x {why}" for why, n in conflicts.most_common()),
    )


def _why_refused(schema: Any, arguments: Any) -> str | None:
    if isinstance(schema, SchemaError):
        return str(schema)
    try:
        schema.decode(orjson.dumps(arguments))
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def conforms(suite: list[KeywordResult], tool_schemas: ToolSchemaResult) -> bool:
    """Every supported keyword's compiled tests pass; clean accept rows are all accepted
    and reject rows all rejected."""
    return not any(r.failures for r in suite if r.supported) and not (
        tool_schemas.wrongly_refused or tool_schemas.wrongly_accepted
    )


def render(suite: list[KeywordResult], tool_schemas: ToolSchemaResult) -> str:
    """The figures as text: one line per keyword file, then the real tool schemas."""
    lines = [
        "JSON Schema test suite, draft 2020-12",
        f"{'file':30} {'passed':>8} {'rate':>7} {'refused':>8}  note",
    ]
    for r in suite:
        note = "" if r.supported else "keyword not supported"
        if r.refusals:
            note = (note + "; " if note else "") + "refused: " + " | ".join(r.refusals)[:150]
        rate = f"{r.rate:7.1%}" if r.passed + r.failed else f"{'-':>7}"
        lines.append(
            f"{r.file:30} {f'{r.passed}/{r.passed + r.failed}':>8} {rate} {r.refused:8}  {note}"
        )
        lines.extend(f"    FAILED {failure}" for failure in r.failures)
    supported = [r for r in suite if r.supported]
    passed = sum(r.passed for r in supported)
    ran = passed + sum(r.failed for r in supported)
    lines.append(
        f"supported keywords: {passed}/{ran} tests passed ({passed / ran:.1%}) "
        f"in {len(supported)} files"
    )
    t = tool_schemas
    clean = t.accept_total - t.conflict_total
    clean_accepted = t.accepted - t.conflict_accepted
    lines += [
        "",
        "Real tool schemas (BFCL simple_python + live_simple), options schema.BFCL",
        f"tools compiled: {t.compiled}/{t.tools}",
        f"accept cases accepted: {clean_accepted}/{clean} ({clean_accepted / clean:.1%})"
        f" + {t.conflict_accepted}/{t.conflict_total} of the rows where the answer key "
        "contradicts the schema",
        f"reject cases rejected: {t.rejected}/{t.reject_total} ({t.rejected / t.reject_total:.1%})",
    ]
    lines.extend(f"    WRONGLY REFUSED {w}" for w in t.wrongly_refused)
    lines.extend(f"    WRONGLY ACCEPTED {w}" for w in t.wrongly_accepted)
    lines.extend(f"    conflict refused: {c}" for c in t.conflicts)
    return "\n".join(lines)
