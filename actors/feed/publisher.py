"""A tick sink that publishes over ``/ws/v1/ingest`` (the ticker-service side).

Used by ``tickstream feed simulate --url … --token …`` and the ingest benchmark:
the same feed actors that run in-process can push over the real WebSocket path.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Final

from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import protocol
from actors.market.messages import TickBatch

LOG = logging.getLogger(__name__)

MAX_FRAME_TICKS: Final = 5000  # ticks per frame; larger batches are split
CONNECT_TIMEOUT: Final = 10.0  # seconds


class PublishError(Exception):
    """The server refused a frame (error frame) or closed the connection."""


class WsPublisher:
    """Send tick batches as ``{"op": "ticks"}`` frames; errors come back as frames.

    Every frame carries an ``id`` and waits for its ``ack`` or ``error`` answer, so
    the publisher is paced by the server (backpressure) and sees rejected ticks.
    """

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self.sent_ticks = 0
        self.rejected_ticks = 0

    async def submit(self, batch: TickBatch) -> None:
        """Send ``batch`` (split into frames of at most ``MAX_FRAME_TICKS``) and await the answers.

        Raises:
            PublishError: the connection closed.
        """
        wire = [t.to_wire() for t in batch.ticks]
        for start in range(0, len(wire), MAX_FRAME_TICKS):
            chunk = wire[start : start + MAX_FRAME_TICKS]
            self._next_id += 1
            frame = {"op": "ticks", "id": self._next_id, "ticks": chunk}
            try:
                await self._ws.send_message(protocol.dumps(frame).decode())
                answer = protocol.loads(await self._ws.get_message())
            except ConnectionClosed as exc:
                raise PublishError(f"connection closed: {exc.reason}") from None
            self.sent_ticks += len(chunk)
            if isinstance(answer, dict) and answer.get("op") == "error":
                details = answer.get("details") or {}
                errors = details.get("errors", []) if isinstance(details, dict) else []
                self.rejected_ticks += len(errors)
                LOG.warning("server refused %d ticks: %s", len(errors), answer.get("message"))

    async def send_instruments(self, instruments: list[dict[str, object]]) -> None:
        """Upsert instruments over the socket (``instruments`` op) and await the ack.

        Raises:
            PublishError: refused or closed.
        """
        self._next_id += 1
        frame = {"op": "instruments", "id": self._next_id, "instruments": instruments}
        try:
            await self._ws.send_message(protocol.dumps(frame).decode())
            answer = protocol.loads(await self._ws.get_message())
        except ConnectionClosed as exc:
            raise PublishError(f"connection closed: {exc.reason}") from None
        if not isinstance(answer, dict) or answer.get("op") != "ack":
            raise PublishError(f"instruments refused: {answer!r}"[:500])


def connect(url: str, token: str) -> AbstractAsyncContextManager[WebSocketConnection]:
    """Open the ingest WebSocket with a bearer token (an async context manager)."""
    return open_websocket_url(
        url,
        extra_headers=[(b"Authorization", f"Bearer {token}".encode())],
        connect_timeout=CONNECT_TIMEOUT,
        message_queue_size=16,
        max_message_size=64 * 1024 * 1024,
    )
