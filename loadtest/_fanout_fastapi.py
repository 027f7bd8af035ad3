"""The FastAPI/uvicorn peer of ``loadtest.bench_fanout``, written the usual way.

A set of connections; a background task makes the quotes (the shared :class:`Source`)
and, for each one, ``await ws.send_text(frame)`` to every subscriber in turn (the frame
is encoded once, as tickstream does). Run through ``python -m loadtest._fanout_peers
fastapi``; FastAPI and uvicorn are dev dependencies of this benchmark only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from ._fanout_peers import MAX_BEHIND, Source, subscribed


def build_app(source: Source) -> FastAPI:
    """The app: ``/ws/v1/stream`` and the generator started with it."""
    connections: set[WebSocket] = set()

    async def broadcast() -> None:
        deadline = time.monotonic()
        while True:
            for _channel, frame in source.frames():
                text = frame.decode()
                for ws in list(connections):
                    try:
                        await ws.send_text(text)
                    except Exception:  # noqa: BLE001 - a closed socket leaves the set
                        connections.discard(ws)
            deadline += source.step
            now = time.monotonic()
            if now - deadline > MAX_BEHIND:
                deadline = now
            await asyncio.sleep(max(0.0, deadline - now))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(broadcast())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                reply = subscribed(await ws.receive_text())
                if reply is not None:
                    await ws.send_text(reply)
                    connections.add(ws)
        except WebSocketDisconnect:
            pass
        finally:
            connections.discard(ws)

    return app


def serve_fastapi(port: int, source: Source) -> None:
    """Run uvicorn (its default loop and WebSocket implementation) until killed."""
    uvicorn.run(build_app(source), host="127.0.0.1", port=port, log_level="warning")
