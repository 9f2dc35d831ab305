from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: Any) -> Any:
    return request.param


@pytest.fixture
def postgres() -> Iterator[str]:
    """The URL of a private PostgreSQL server of the test's own (see postgres_server)."""
    pytest.importorskip("asyncpg", reason='needs asyncpg: pip install "router[postgres]"')
    from postgres_server import start

    server = start()
    try:
        yield server.dsn()
    finally:
        server.stop()
