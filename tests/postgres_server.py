"""The tests' private PostgreSQL server (bench/postgres.py starts it, fsync off).

Without PostgreSQL binaries the tests that need it skip, saying how to enable them, unless
``ROUTER_REQUIRE_POSTGRES=1`` (CI), under which they fail.
"""

from __future__ import annotations

import os

import pytest

from bench.postgres import Server, Unavailable

__all__ = ["Server", "start"]

HOW = (
    "install PostgreSQL (Debian: apt-get install postgresql) to run the PostgreSQL tests; "
    "set ROUTER_REQUIRE_POSTGRES=1 to make their absence an error"
)


def start() -> Server:
    """A running server of the caller's own; skips (or fails, in CI) when none can start."""
    try:
        return Server()
    except Unavailable as exc:
        if os.environ.get("ROUTER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (ROUTER_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(f"{exc}; {HOW}")
