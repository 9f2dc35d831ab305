"""A private PostgreSQL server for the tests, started from the binaries on the machine.

It is initialised in a temporary folder, listens on a free loopback port, trusts local
connections and is stopped afterwards. As root it runs as the ``postgres`` user. Without
PostgreSQL binaries the tests that need it skip, saying how to enable them, unless
``ROUTER_REQUIRE_POSTGRES=1`` (CI), under which they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

HOW = (
    "install PostgreSQL (Debian: apt-get install postgresql) to run the PostgreSQL tests; "
    "set ROUTER_REQUIRE_POSTGRES=1 to make their absence an error"
)


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    return versions[-1].parent if versions else None


def unavailable(reason: str) -> None:
    if os.environ.get("ROUTER_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (ROUTER_REQUIRE_POSTGRES=1): {reason}")
    pytest.skip(f"{reason}; {HOW}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One server; ``dsn(database)`` names a database on it."""

    def __init__(self) -> None:
        folder = binaries()
        if folder is None:
            unavailable("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
        assert folder is not None
        self._bin = folder
        self._root = Path(tempfile.mkdtemp(prefix="router-pg-"))
        self._data = self._root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self._root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-o",
            options,
            "-w",
            "-l",
            str(self._root / "log"),
            "start",
        )

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, str(self._bin / tool), *args], capture_output=True, text=True
        )
        if result.returncode != 0:
            unavailable(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self._as_user,
                str(self._bin / "pg_ctl"),
                "-D",
                str(self._data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self._root, ignore_errors=True)
