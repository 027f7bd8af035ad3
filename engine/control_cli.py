"""``tickstream control <cmd>``: send one command over ``/ws/v1/control``, print the result.

Exit codes: 0 when the result is ``ok``, 1 when it is not, 2 when the channel cannot
be reached or the token is refused (HTTP 401/403 at the handshake).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, Final

import orjson
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    open_websocket_url,
)

from protocol import COMMANDS, LOG_LEVELS, ControlCommand

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_UNREACHABLE: Final = 2
DEFAULT_URL: Final = "ws://127.0.0.1:8081/ws/v1/control"
CONNECT_TIMEOUT: Final = 10.0  # seconds
ANSWER_TIMEOUT: Final = 30.0  # seconds for the result (a restart rebuilds from the ledger)


class ChannelError(Exception):
    """The channel could not be reached, or closed before answering."""


async def send_command(url: str, token: str, frame: dict[str, object]) -> dict[str, Any]:
    """Send one ``command`` frame with a header token; return the ``result`` frame.

    Raises:
        ChannelError: connection refused, handshake refused, or closed without a result.
    """
    try:
        async with open_websocket_url(
            url,
            extra_headers=[(b"Authorization", f"Bearer {token}".encode())],
            connect_timeout=CONNECT_TIMEOUT,
        ) as ws:
            await ws.send_message(orjson.dumps(frame).decode())
            with trio.fail_after(ANSWER_TIMEOUT):
                while True:
                    answer = orjson.loads(await ws.get_message())
                    if isinstance(answer, dict) and answer.get("op") in ("result", "error"):
                        return answer
    except ConnectionRejected as exc:
        raise ChannelError(f"handshake refused: HTTP {exc.status_code}") from None
    except HandshakeError as exc:
        # trio-websocket wraps a failed TCP connect (refused, timed out) in this one.
        cause = exc.__cause__ or exc.__context__ or exc
        raise ChannelError(f"cannot reach {url}: {cause!r}") from None
    except ConnectionClosed as exc:
        raise ChannelError(f"closed before answering: {exc.reason}") from None
    except (OSError, trio.TooSlowError) as exc:
        raise ChannelError(f"cannot reach {url}: {exc!r}") from None


def build_frame(args: argparse.Namespace) -> dict[str, object]:
    """Return the ``command`` frame for the parsed CLI arguments."""
    command = ControlCommand(
        1, args.cmd, account=args.account, connection=args.connection, level=args.level
    )
    return command.frame()


def _command(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("TICKSTREAM_TOKEN", "")
    if not token:
        print("tickstream control: a token is needed: --token or TICKSTREAM_TOKEN", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        answer = trio.run(functools.partial(send_command, args.url, token, build_frame(args)))
    except ChannelError as exc:
        print(f"tickstream control: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK if answer.get("ok") is True else EXIT_FAILURE


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``control`` command to the ``tickstream`` parser."""
    p = sub.add_parser("control", help="send one ops command over /ws/v1/control")
    p.add_argument("cmd", choices=sorted(COMMANDS), help="the command")
    p.add_argument("--account", help="account id (account.restart/halt/resume)")
    p.add_argument("--connection", type=int, help="connection id (connection.kick)")
    p.add_argument("--level", choices=LOG_LEVELS, help="log level (log.level)")
    p.add_argument("--url", default=DEFAULT_URL)
    p.add_argument("--token", help="JWT with scope admin (or $TICKSTREAM_TOKEN)")
    p.set_defaults(func=_command)
