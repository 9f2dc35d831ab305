"""A private PostgreSQL server started from the binaries on the machine, for the bench suite
and the tests.

It is initialised in a temporary folder, listens on a free loopback port, trusts local
connections and is removed when stopped. As root it runs as the ``postgres`` user (the
server refuses to run as root). ``durable=False`` turns fsync off (the tests, which need
no crash safety from the server); the bench runs it durable, as a service would.

Write transactions are counted on the server: every transaction that writes is assigned a
transaction id, so the next id to be assigned (``XID_NEXT``) grows by exactly the number of
write transactions committed or aborted in between, whoever made them.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["XID_NEXT", "Server", "Unavailable", "binaries", "shared"]

XID_NEXT = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


class Unavailable(Exception):
    """No server could be started here; the message says why."""


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One running server; ``dsn(database)`` names a database on it. Raises Unavailable."""

    def __init__(self, *, durable: bool = False) -> None:
        folder = binaries()
        if folder is None:
            raise Unavailable("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
        self._bin = folder
        self._root = Path(tempfile.mkdtemp(prefix="router-pg-"))
        self._data = self._root / "data"
        self._names = itertools.count()
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        try:
            data = str(self._data)
            self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
            options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
            options += "" if durable else " -c fsync=off"
            log = str(self._root / "log")
            self._run("pg_ctl", "-D", data, "-o", options, "-w", "-l", log, "start")
        except Unavailable:
            shutil.rmtree(self._root, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, str(self._bin / tool), *args], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise Unavailable(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "db") -> str:
        """Create an empty database; returns its URL."""
        name = f"{prefix}_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.dsn(name)

    def next_xid(self) -> int:
        """The next transaction id the server will assign (see the module's docstring)."""
        result = subprocess.run(
            [str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
            + ["-d", "postgres", "-tAc", XID_NEXT],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(result.stdout)

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate"]
            + ["stop"],
            capture_output=True,
        )
        shutil.rmtree(self._root, ignore_errors=True)


_shared: dict[str, Server | None] = {}


def shared() -> Server | None:
    """The bench process's one durable server, started on first use and stopped when the
    process exits; None, saying why on stderr once, where none can start here."""
    if "server" not in _shared:
        try:
            server: Server | None = Server(durable=True)
        except Unavailable as exc:
            print(f"bench: no PostgreSQL rows: {exc}", file=sys.stderr)
            server = None
        else:
            atexit.register(server.stop)
        _shared["server"] = server
    return _shared["server"]
