"""Serve the app with hypercorn's trio worker, with a graceful stop."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from actors.registry import Actors

from ..context import Engine
from ._app import create_app

LOG = logging.getLogger(__name__)


def hypercorn_config(engine: Engine) -> HypercornConfig:
    """Translate the server section of the config into hypercorn's."""
    server = engine.config.server
    cfg = HypercornConfig()
    cfg.bind = [f"{server.host}:{server.port}"]
    cfg.graceful_timeout = server.graceful_timeout
    cfg.keep_alive_timeout = server.keep_alive_timeout
    cfg.read_timeout = int(server.read_timeout)
    cfg.websocket_max_message_size = server.ws_max_frame_bytes
    cfg.ssl_handshake_timeout = server.ssl_handshake_timeout
    cfg.include_server_header = False  # do not advertise the server software
    if server.tls:  # https and wss on the same port
        cfg.certfile, cfg.keyfile = server.certfile, server.keyfile
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    return cfg


class Gateway:
    """The HTTP/WebSocket listener as a supervised service.

    ``stop()`` asks hypercorn to stop accepting and to finish in-flight requests
    within ``graceful_timeout``; it also sets the engine's ``draining`` event so
    WebSocket handlers close themselves with 1001.
    """

    def __init__(self, engine: Engine, actors: Actors | None = None) -> None:
        self._engine = engine
        self._stopping = trio.Event()
        self.app = create_app(engine, actors)
        self.bound: list[str] = []

    def stop(self) -> None:
        """Request a graceful stop (sync; safe to call more than once)."""
        self._engine.lifecycle.draining.set()
        self._stopping.set()

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until ``stop()``; report the bound addresses when listening."""
        self._stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            self.bound = await nursery.start(self._serve)
            LOG.info("listening on %s", ", ".join(self.bound))
            task_status.started(self.bound)

    async def _serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve(
            self.app,
            hypercorn_config(self._engine),
            shutdown_trigger=self._stopping.wait,
            task_status=task_status,
        )
