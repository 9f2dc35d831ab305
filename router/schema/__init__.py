"""JSON Schema compiled once into precompiled checks and msgspec types. Pure."""

from __future__ import annotations

from .compiler import (
    ANNOTATIONS,
    APPLICATORS,
    ASSERTIONS,
    BFCL,
    OPENAPI,
    CompiledSchema,
    Failure,
    SchemaOptions,
    compile_schema,
    standard_schema,
)

__all__ = [
    "ANNOTATIONS",
    "APPLICATORS",
    "ASSERTIONS",
    "BFCL",
    "OPENAPI",
    "CompiledSchema",
    "Failure",
    "SchemaOptions",
    "compile_schema",
    "standard_schema",
]
