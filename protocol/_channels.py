"""Stream channels and client frames of ``/ws/v1/stream`` (PROTOCOL.md "WebSockets").

A channel name is validated here, at the boundary, before anything looks it up:
``quotes:<SYMBOL>``, ``candles:<SYMBOL>:<tf>``, ``chain:<UNDERLYING>:<YYYY-MM-DD>`` and
``account:<ID>:orders|positions|pnl|strategies``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Any, Final

from ._ticks import SYMBOL_RE

ACCOUNT_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
TIMEFRAME_NAMES: Final = frozenset({"1m", "5m", "15m", "1h", "1d"})
CHANNEL_MAX_LENGTH: Final = 128
MAX_FRAME_ID: Final = 2**53  # ids are echoed; keep them exact in every JSON client


class ChannelKind(enum.StrEnum):
    """The kinds of channel; account kinds are the part after ``account:<ID>:``."""

    QUOTES = "quotes"
    CANDLES = "candles"
    CHAIN = "chain"
    ORDERS = "orders"
    POSITIONS = "positions"
    PNL = "pnl"
    STRATEGIES = "strategies"


ACCOUNT_KINDS: Final = frozenset(
    {ChannelKind.ORDERS, ChannelKind.POSITIONS, ChannelKind.PNL, ChannelKind.STRATEGIES}
)


class ChannelError(ValueError):
    """A channel name or client frame that fails validation (answered with an error frame)."""


@dataclass(frozen=True, slots=True)
class Channel:
    """A validated channel name.

    Attributes:
        name: the channel as the client wrote it (and as events carry it).
        kind: what the channel carries.
        key: the symbol (quotes, candles), the underlying (chain) or the account id.
        tf: the candle timeframe (candles only).
        expiry: the chain's expiry date (chain only).
    """

    name: str
    kind: ChannelKind
    key: str
    tf: str | None = None
    expiry: dt.date | None = None

    @property
    def account(self) -> str | None:
        """The account of an account channel, else None."""
        return self.key if self.kind in ACCOUNT_KINDS else None

    @property
    def lossless(self) -> bool:
        """Whether every event must reach the client (account orders); others conflate."""
        return self.kind is ChannelKind.ORDERS


def parse_channel(name: object) -> Channel:
    """Validate a channel name.

    Raises:
        ChannelError: not a string, too long, unknown kind, bad symbol, timeframe,
            date or account id.
    """
    if not isinstance(name, str) or not name or len(name) > CHANNEL_MAX_LENGTH:
        raise ChannelError("channel must be a non-empty string of at most 128 characters")
    parts = name.split(":")
    head = parts[0]
    if head == "account":
        if len(parts) != 3 or not ACCOUNT_ID_RE.fullmatch(parts[1]):
            raise ChannelError("account channels are account:<ID>:<kind>")
        try:
            kind = ChannelKind(parts[2])
        except ValueError:
            raise ChannelError(f"unknown account channel kind {parts[2]!r}") from None
        if kind not in ACCOUNT_KINDS:
            raise ChannelError(f"unknown account channel kind {parts[2]!r}")
        return Channel(name, kind, parts[1])
    if head == "quotes" and len(parts) == 2:
        return Channel(name, ChannelKind.QUOTES, _symbol(parts[1]))
    if head == "candles" and len(parts) == 3:
        if parts[2] not in TIMEFRAME_NAMES:
            raise ChannelError(f"timeframe must be one of {sorted(TIMEFRAME_NAMES)}")
        return Channel(name, ChannelKind.CANDLES, _symbol(parts[1]), tf=parts[2])
    if head == "chain" and len(parts) == 3:
        try:
            expiry = dt.date.fromisoformat(parts[2])
        except ValueError:
            raise ChannelError("chain expiry must be YYYY-MM-DD") from None
        if len(parts[2]) != 10:
            raise ChannelError("chain expiry must be YYYY-MM-DD")
        return Channel(name, ChannelKind.CHAIN, _symbol(parts[1]), expiry=expiry)
    raise ChannelError(f"unknown channel {name[:64]!r}")


def _symbol(value: str) -> str:
    if not SYMBOL_RE.fullmatch(value):
        raise ChannelError("symbol must be 1-40 of A-Z 0-9 & _ . - starting with a letter or digit")
    return value


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A validated client frame: ``subscribe``, ``unsubscribe`` or ``ping``."""

    op: str
    id: int | str | None
    channel: Channel | None = None
    since: int | None = None
    epoch: str | None = None


def parse_stream_frame(frame: dict[str, Any]) -> StreamRequest:
    """Validate a decoded client frame (other than ``auth``, which the session handles).

    Raises:
        ChannelError: unknown op, bad id, channel, ``since`` or ``epoch``.
    """
    op = frame.get("op")
    frame_id = frame.get("id")
    if frame_id is not None and not _valid_id(frame_id):
        raise ChannelError("id must be an integer or a string of at most 64 characters")
    if op == "ping":
        return StreamRequest("ping", frame_id)
    if op not in ("subscribe", "unsubscribe"):
        raise ChannelError(f"unknown op {str(op)[:32]!r}")
    channel = parse_channel(frame.get("channel"))
    if op == "unsubscribe":
        return StreamRequest(op, frame_id, channel)
    since = frame.get("since")
    if since is not None and (
        isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < MAX_FRAME_ID
    ):
        raise ChannelError("since must be a non-negative integer")
    epoch = frame.get("epoch")
    if epoch is not None and (not isinstance(epoch, str) or not 0 < len(epoch) <= 64):
        raise ChannelError("epoch must be a string of at most 64 characters")
    return StreamRequest(op, frame_id, channel, since, epoch)


def _valid_id(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_FRAME_ID < value < MAX_FRAME_ID
    return isinstance(value, str) and len(value) <= 64
