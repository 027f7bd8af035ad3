"""``tickstream apikey create|list|revoke``: API keys on the configured database.

The database is ``TICKSTREAM_DATABASE_URL`` or, unset, the embedded one (as for
``tickstream db``); it is migrated to head first. ``create`` prints the key alone on
the last line of its output, once; ``list`` never prints a key or a hash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeVar

import trio
import trio_asyncio

from . import apikeys, migrate
from .config import ConfigError, DatabaseConfig, load_config
from .context import system_clock_ms
from .embedded_pg import database_dsn
from .logs import configure_logging
from .store import DatabaseUnavailable, Store

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
T = TypeVar("T")


def _fail(message: str, code: int) -> int:
    print(f"tickstream apikey: {message}", file=sys.stderr)
    return code


async def _with_store(
    config_db: DatabaseConfig, dsn: str, work: Callable[[Store], Awaitable[T]]
) -> T:
    async with trio_asyncio.open_loop():
        store = Store(config_db, dsn)
        await store.open()
        try:
            return await work(store)
        finally:
            with trio.CancelScope(shield=True):
                await store.close()


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _create(args: argparse.Namespace, store: Store) -> int:
    key, secret = await apikeys.create(
        store,
        sub=args.user,
        scopes=args.scopes,
        accounts=args.account_list,
        now_ms=system_clock_ms(),
    )
    print(f"created API key {key.id} ({key.prefix}) for {key.sub}")
    print(f"scopes: {' '.join(key.scopes)}; accounts: {','.join(key.accounts) or '-'}")
    print("the key is shown once, on the next line; only its hash is stored:")
    print(secret, flush=True)
    return EXIT_OK


async def _list(args: argparse.Namespace, store: Store) -> int:
    rows = await apikeys.list_keys(store)
    print("id\tprefix\tuser\tscopes\taccounts\tcreated\trevoked")
    for k in rows:
        print(
            "\t".join(
                [
                    str(k.id),
                    k.prefix,
                    k.sub,
                    " ".join(k.scopes),
                    ",".join(k.accounts) or "-",
                    _when(k.created_ts),
                    _when(k.revoked_ts),
                ]
            )
        )
    return EXIT_OK


async def _revoke(args: argparse.Namespace, store: Store) -> int:
    key = await apikeys.revoke(store, args.key_id, system_clock_ms())
    if key is None:
        return _fail(f"no API key {args.key_id}", EXIT_FAILURE)
    print(f"revoked {key.id} ({key.prefix}) at {_when(key.revoked_ts)}")
    return EXIT_OK


def _command(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    if args.action == "create":
        try:
            args.scopes = apikeys.parse_scopes(args.scope)
            args.account_list = apikeys.parse_accounts(args.accounts)
        except ValueError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        if not 1 <= len(args.user) <= 128:
            return _fail("--user must be 1 to 128 characters", EXIT_CONFIG)
    if args.action == "revoke":
        try:
            args.key_id = uuid.UUID(args.id)
        except ValueError:
            return _fail(f"not an API key id: {args.id!r}", EXIT_CONFIG)
    configure_logging("WARNING", "console")
    action = {"create": _create, "list": _list, "revoke": _revoke}[args.action]
    with database_dsn(config.database) as dsn:
        try:
            migrate.upgrade(dsn)
            code: int = trio.run(_with_store, config.database, dsn, functools.partial(action, args))
        except DatabaseUnavailable:
            return _fail("database unavailable", EXIT_FAILURE)
    return code


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``apikey`` command to the ``tickstream`` parser."""
    p = sub.add_parser("apikey", help="API keys: create, list, revoke")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; prints it once, on the last line")
    create.add_argument("--user", required=True, help="the token subject (sub)")
    create.add_argument("--accounts", default="", help="comma-separated account ids")
    create.add_argument("--scope", required=True, help='e.g. "read trade"')
    actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("id", help="the key id (from list)")
    p.set_defaults(func=_command)
