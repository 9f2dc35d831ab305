"""The peers that are installed (``pip install -e ".[peers]"``)."""

from __future__ import annotations

import importlib

from . import Peer

__all__ = ["installed_peers"]

MODULES = ("bench.peers.langgraph", "bench.peers.burr")


def installed_peers() -> list[Peer]:
    """Every peer whose package is installed; each module's PEERS is empty without it."""
    peers: list[Peer] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        peers.extend(module.PEERS)
    return peers
