"""Owner process for the embedded PostgreSQL orphan tests.

Usage: ``python _embedded_owner.py DATA_DIR``. Runs ``EmbeddedPostgres.run`` under trio,
prints ``READY <postmaster pid> <dsn>`` once the server is up, stops it on SIGTERM and
prints ``STOPPED``. The tests SIGKILL or SIGTERM this process and watch the postmaster.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio

from engine.embedded_pg import EmbeddedPostgres


async def _main(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    # The receiver exists before READY is printed, so an early SIGTERM is not lost.
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            dsn = await nursery.start(pg.run)
            print(f"READY {pg.pid} {dsn}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    trio.run(_main, Path(sys.argv[1]))
