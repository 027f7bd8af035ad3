"""Helpers of the ``/ws/v1/stream`` end-to-end tests (over the reference client)."""

from __future__ import annotations

from typing import Any

import trio
from trio_websocket import ConnectionClosed

from loadtest.stream_client import StreamSocket

from .server import ServerProcess


def stream_url(server: ServerProcess) -> str:
    """The stream endpoint of ``server``."""
    return f"ws://127.0.0.1:{server.port}/ws/v1/stream"


async def closed_with(sock: StreamSocket, budget: float = 15) -> int | None:
    """Read until the server closes the socket; return the close code."""
    with trio.fail_after(budget):
        try:
            while True:
                await sock.receive()
        except ConnectionClosed as closed:
            return closed.reason.code if closed.reason is not None else None


async def subscribed(sock: StreamSocket, channel: str, **resume: Any) -> dict[str, Any]:
    """Subscribe and return the answer (``subscribed`` or ``error``)."""
    frame_id = await sock.subscribe(channel, **resume)
    return await sock.until(lambda m: m.get("id") == frame_id)
