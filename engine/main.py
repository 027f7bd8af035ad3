"""The ``tickstream`` command: ``serve``, ``db`` (migrations) and friends.

``main`` builds the one :class:`~engine.context.Engine` context and the root
supervisor; nothing else creates long-lived state.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import math
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio
import trio_asyncio
from trio_websocket import HandshakeError

from actors.feed.publisher import PublishError, WsPublisher, connect
from actors.feed.simulator import MarketSimulator, SimulatorFeed

from . import apikey_cli, control_cli, migrate
from .auth import Scope, issue_token
from .calendar import load_calendar
from .config import Config, ConfigError, Secret, load_config, redact_url, with_overrides
from .context import Engine, system_clock_ms
from .embedded_pg import EmbeddedPostgres, database_dsn
from .logs import configure_logging
from .runtime import SIMULATOR_BATCH, build_runtime, check_config

LOG = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
EXIT_FORCED: Final = 130  # a second signal cut the graceful stop short
# The young-generation threshold once the engine is up: the hot path (tick batches) makes
# thousands of short-lived objects per frame; with the default 700 they survive into the
# older generations, whose collections then rescan the whole heap (loadtest/bench_ingest).
GC_GEN0_THRESHOLD: Final = 10_000
DEMO_SECRET_BYTES: Final = 48
MS_PER_S: Final = 1000


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    print(f"tickstream: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- serve


@dataclass(eq=False, slots=True)
class _Shutdown:
    # First SIGTERM/SIGINT: graceful stop. Second: everything is cancelled at once
    # (shielded cleanup such as stopping the embedded database still runs).
    requested: trio.Event = field(default_factory=trio.Event)
    forced: bool = False


async def _wait_for_signal(shutdown: _Shutdown, everything: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if shutdown.requested.is_set():
                LOG.warning("second signal %s: stopping at once", name)
                shutdown.forced = True
                everything.cancel()
                return
            LOG.info("signal %s: shutting down gracefully", name)
            shutdown.requested.set()


def _announce(config: Config, engine: Engine, bound: Sequence[str], demo: bool) -> None:
    # Plain stdout lines for the human who typed `make run`; logs stay JSON.
    scheme = "https" if config.server.tls else "http"
    base = f"{scheme}://{config.server.host}:{config.server.port}"
    lines = [
        "tickstream is up:",
        f"  health   {base}/health",
        f"  ready    {base}/ready",
        f"  metrics  {base}/metrics",
        f"  api docs {base}/docs   (OpenAPI: {base}/openapi.json)",
        f"  listening on {', '.join(bound)}",
    ]
    keys = config.auth.key_set()
    if demo and config.auth.jwt_secret is not None and keys is not None:
        now = engine.clock() // MS_PER_S
        kid, signing = keys.signing
        token = issue_token(
            signing,
            kid=kid,
            sub="demo-admin",
            scopes=[Scope.ADMIN, Scope.READ, Scope.TRADE, Scope.FEED_PUBLISH],
            now=now,
            ttl=config.auth.demo_token_ttl,
            issuer=config.auth.issuer,
            audience=config.auth.audience,
        )
        lines += [
            "demo mode: a JWT secret was generated for this run only:",
            f"  TICKSTREAM_JWT_SECRET={config.auth.jwt_secret.reveal()}",
            "demo admin token (Authorization: Bearer ...):",
            f"  {token}",
        ]
    print("\n".join(lines), flush=True)


async def serve(config: Config, *, demo: bool, ready: trio.Event | None = None) -> bool:
    """Run the engine until SIGTERM/SIGINT, then stop it in order.

    Args:
        config: the loaded configuration (with a JWT secret).
        demo: print the demo secret and an admin token once up.
        ready: set once the gateway listens (tests).

    Returns:
        True after a graceful stop, False when a second signal forced it.
    """
    shutdown = _Shutdown()
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        nursery.start_soon(_wait_for_signal, shutdown, nursery.cancel_scope)
        if config.database.url is not None:
            dsn = config.database.url.reveal()
        else:
            pg = EmbeddedPostgres(
                Path(config.database.embedded_dir),
                database=config.database.embedded_database,
            )
            dsn = await nursery.start(pg.run)
        LOG.info("migrating database %s", redact_url(dsn))
        await trio.to_thread.run_sync(migrate.upgrade, dsn)

        runtime = build_runtime(config, dsn)
        engine, gateway, root = runtime.engine, runtime.gateway, runtime.root
        async with trio.open_nursery() as engine_nursery:
            await engine_nursery.start(root.run)
            settle_heap()
            _announce(config, engine, gateway.bound, demo)
            if ready is not None:
                ready.set()
            await shutdown.requested.wait()
            root.stop()
        LOG.info("engine stopped")
        nursery.cancel_scope.cancel()
    return not shutdown.forced


def settle_heap() -> None:
    # Everything built at start-up (config, calendars, instrument master, routes) lives as
    # long as the process: freezing it keeps it out of every later collection.
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log.level, args.log_format or config.log.format)
    if config.auth.key_set() is None:
        if not args.demo:
            return _fail(
                "TICKSTREAM_JWT_SECRET (or TICKSTREAM_JWT_SECRET_FILE, or "
                "TICKSTREAM_JWT_KEYS_FILE) is not set; "
                "serve refuses to start without a JWT signing key (or use --demo)"
            )
        config = with_overrides(
            config, auth={"jwt_secret": Secret(secrets.token_urlsafe(DEMO_SECRET_BYTES))}
        )
    if args.demo:
        config = with_overrides(config, feed={"simulator": True})
    try:
        check_config(config)
    except ConfigError as exc:
        return _fail(str(exc))
    clean = trio.run(functools.partial(serve, config, demo=args.demo))
    return EXIT_OK if clean else EXIT_FORCED


# ---------------------------------------------------------------------- db


def _db_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log.level, "console")
    with database_dsn(config.database) as dsn:
        if args.action == "upgrade":
            migrate.upgrade(dsn, args.revision or "head")
            print(migrate.current(dsn).strip() or "<base>")
        elif args.action == "downgrade":
            migrate.downgrade(dsn, args.revision or "-1")
            print(migrate.current(dsn).strip() or "<base>")
        elif args.action == "current":
            print(migrate.current(dsn).strip() or "<base>")
        else:
            print(migrate.history(dsn).strip())
    return EXIT_OK


# ---------------------------------------------------------------------- feed


async def simulate_over_websocket(
    url: str,
    token: str,
    *,
    rate: float,
    seed: int,
    duration: float | None,
    calendar_dir: Path,
) -> tuple[int, int]:
    """Run the market simulator as a separate publisher over ``/ws/v1/ingest``.

    Returns:
        (ticks sent, ticks the server refused).
    """
    calendar = load_calendar(calendar_dir)
    sim = MarketSimulator(calendar, seed=seed, start_ms=system_clock_ms())
    async with connect(url, token) as ws:
        publisher = WsPublisher(ws)
        await publisher.send_instruments([i.to_wire() for i in sim.instruments()])
        feed = SimulatorFeed(
            sim, publisher, rate=rate, batch=SIMULATOR_BATCH, clock=system_clock_ms
        )
        with trio.move_on_after(math.inf if duration is None else duration):
            await feed.run()
        return publisher.sent_ticks, publisher.rejected_ticks


def _feed_command(args: argparse.Namespace) -> int:
    configure_logging("INFO", "console")
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc))
    token = args.token or os.environ.get("TICKSTREAM_TOKEN", "")
    if not token:
        return _fail("a token is needed: --token or TICKSTREAM_TOKEN (scope feed:publish)")
    try:
        sent, refused = trio.run(
            functools.partial(
                simulate_over_websocket,
                args.url,
                token,
                rate=args.rate,
                seed=args.seed,
                duration=args.duration,
                calendar_dir=Path(config.market.calendar_dir),
            )
        )
    except KeyboardInterrupt:
        return EXIT_OK
    except (OSError, PublishError, HandshakeError) as exc:
        return _fail(f"cannot publish to {args.url}: {exc}", EXIT_FAILURE)
    print(f"sent {sent} ticks, {refused} refused")
    return EXIT_OK


# ---------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``tickstream`` command."""
    parser = argparse.ArgumentParser(prog="tickstream", description=__doc__)
    parser.add_argument("--config", help="TOML config file (default $TICKSTREAM_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the engine")
    p_serve.add_argument("--demo", action="store_true", help="generate a JWT secret, print a token")
    p_serve.add_argument("--log-format", choices=["json", "console"], help="override log.format")
    p_serve.set_defaults(func=_serve_command)

    p_feed = sub.add_parser("feed", help="feed tools")
    p_feed.add_argument("action", choices=["simulate"])
    p_feed.add_argument("--url", default="ws://127.0.0.1:8081/ws/v1/ingest")
    p_feed.add_argument("--token", help="JWT with scope feed:publish (or $TICKSTREAM_TOKEN)")
    p_feed.add_argument("--rate", type=float, default=2000.0, help="ticks per second")
    p_feed.add_argument("--seed", type=int, default=7)
    p_feed.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    p_feed.set_defaults(func=_feed_command)

    p_db = sub.add_parser("db", help="database migrations")
    p_db.add_argument("action", choices=["upgrade", "downgrade", "current", "history"])
    p_db.add_argument("revision", nargs="?", help="target revision (upgrade: head, downgrade: -1)")
    p_db.set_defaults(func=_db_command)
    apikey_cli.add_parser(sub)
    control_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tickstream`` command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
