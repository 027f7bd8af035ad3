"""The ``tickstream`` command: ``serve``, ``db`` (migrations) and friends.

``main`` builds the one :class:`~engine.context.Engine` context and the root
supervisor; nothing else creates long-lived state.
"""

from __future__ import annotations

import argparse
import functools
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio
import trio_asyncio

from . import migrate
from .auth import Scope, issue_token
from .bus import Bus, InProcessBus, RedisBus
from .config import Config, ConfigError, Secret, load_config, redact_url, with_overrides
from .context import Engine, system_clock_ms
from .embedded_pg import EmbeddedPostgres
from .gateway import Gateway
from .logs import configure_logging
from .metrics import Metrics
from .store import Store
from .supervisor import ChildSpec, Restart, Strategy, Supervisor

LOG = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
DEMO_SECRET_BYTES: Final = 48
ROOT_INTENSITY: Final = 3
ROOT_PERIOD: Final = 30.0  # seconds
STORE_SHUTDOWN: Final = 6.0  # seconds; the pool's own close timeout is 5 s
MS_PER_S: Final = 1000


def _fail(message: str, code: int = EXIT_CONFIG) -> int:
    print(f"tickstream: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- serve


async def _wait_for_signal(stop: trio.Event) -> None:
    # First SIGTERM/SIGINT: graceful stop. Second: the caller's nursery is cancelled.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if stop.is_set():
                LOG.warning("second signal %s: stopping at once", signal.Signals(signum).name)
                raise KeyboardInterrupt
            LOG.info("signal %s: shutting down gracefully", signal.Signals(signum).name)
            stop.set()


def _make_bus(config: Config) -> Bus:
    if config.redis.url is None:
        return InProcessBus()
    return RedisBus(config.redis, config.redis.url.reveal())


def _announce(config: Config, engine: Engine, bound: Sequence[str], demo: bool) -> None:
    # Plain stdout lines for the human who typed `make run`; logs stay JSON.
    base = f"http://{config.server.host}:{config.server.port}"
    lines = [
        "tickstream is up:",
        f"  health   {base}/health",
        f"  ready    {base}/ready",
        f"  metrics  {base}/metrics",
        f"  api docs {base}/docs   (OpenAPI: {base}/openapi.json)",
        f"  listening on {', '.join(bound)}",
    ]
    if demo and config.auth.jwt_secret is not None:
        now = engine.clock() // MS_PER_S
        token = issue_token(
            config.auth.jwt_secret.reveal(),
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


async def serve(config: Config, *, demo: bool, ready: trio.Event | None = None) -> None:
    """Run the engine until SIGTERM/SIGINT, then stop it in order.

    Args:
        config: the loaded configuration (with a JWT secret).
        demo: print the demo secret and an admin token once up.
        ready: set once the gateway listens (tests).
    """
    stop = trio.Event()
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        nursery.start_soon(_wait_for_signal, stop)
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

        metrics = Metrics()
        store = Store(config.database, dsn)
        metrics.watch_pool(store.statistics)
        engine = Engine(
            config=config,
            store=store,
            bus=_make_bus(config),
            metrics=metrics,
            clock=system_clock_ms,
        )
        gateway = Gateway(engine)
        root = Supervisor(
            "root",
            [
                ChildSpec("store", store.run, restart=Restart.PERMANENT, shutdown=STORE_SHUTDOWN),
                ChildSpec("bus", engine.bus.run, restart=Restart.PERMANENT),
                ChildSpec(
                    "gateway",
                    gateway.run,
                    restart=Restart.PERMANENT,
                    stop=gateway.stop,
                    shutdown=config.server.graceful_timeout + 2,
                ),
            ],
            strategy=Strategy.REST_FOR_ONE,
            intensity=ROOT_INTENSITY,
            period=ROOT_PERIOD,
            on_event=metrics.observe_supervisor,
        )
        async with trio.open_nursery() as engine_nursery:
            await engine_nursery.start(root.run)
            _announce(config, engine, gateway.bound, demo)
            if ready is not None:
                ready.set()
            await stop.wait()
            root.stop()
        LOG.info("engine stopped")
        nursery.cancel_scope.cancel()


def _serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log.level, args.log_format or config.log.format)
    if config.auth.jwt_secret is None:
        if not args.demo:
            return _fail(
                "TICKSTREAM_JWT_SECRET (or TICKSTREAM_JWT_SECRET_FILE) is not set; "
                "serve refuses to start without a JWT signing key (or use --demo)"
            )
        config = with_overrides(
            config, auth={"jwt_secret": Secret(secrets.token_urlsafe(DEMO_SECRET_BYTES))}
        )
    try:
        trio.run(functools.partial(serve, config, demo=args.demo))
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


# ---------------------------------------------------------------------- db


def _db_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc))
    configure_logging(config.log.level, "console")
    pg: EmbeddedPostgres | None = None
    if config.database.url is not None:
        dsn = config.database.url.reveal()
    else:
        pg = EmbeddedPostgres(
            Path(config.database.embedded_dir), database=config.database.embedded_database
        )
        dsn = pg.start()
    try:
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
    finally:
        if pg is not None:
            pg.stop()
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

    p_db = sub.add_parser("db", help="database migrations")
    p_db.add_argument("action", choices=["upgrade", "downgrade", "current", "history"])
    p_db.add_argument("revision", nargs="?", help="target revision (upgrade: head, downgrade: -1)")
    p_db.set_defaults(func=_db_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tickstream`` command line; return the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
