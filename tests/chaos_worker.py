"""A worker process for the chaos tests: python chaos_worker.py LOG LEDGER OWNER TTL; it
prints "ready" once it serves, and a line for each run taken over from under it."""

from __future__ import annotations

import logging
import sys

import anyio
from chaos_app import definitions

from router import Runtime, Worker, open_store


async def main(location: str, ledger_path: str, owner: str, ttl: float) -> None:
    async with open_store(location) as store:
        runtime = Runtime(store, owner=owner, lease_ttl_s=ttl)
        worker = Worker(
            runtime, definitions(runtime, ledger_path), concurrency=4, poll_s=0.1, grace_s=0
        )
        async with anyio.create_task_group() as tg:

            async def on_term() -> None:
                import signal

                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        worker.stop()
                        return

            tg.start_soon(on_term)
            await worker.serve(ready=lambda: print("ready", flush=True))
            tg.cancel_scope.cancel()
        print(f"lost {worker.lost}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
