"""Serve the app with hypercorn's trio worker, with a graceful stop."""

from __future__ import annotations

import logging
import socket

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

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


def listening_sockets(engine: Engine, config: HypercornConfig) -> Sockets:
    """Create the listening sockets with a bound on how long a write may stall.

    hypercorn writes to a connection inside a shielded scope with no deadline, so a
    client that stops reading would hold a handler (and the engine's shutdown) forever.
    ``TCP_USER_TIMEOUT`` (inherited by accepted sockets; on Linux it also covers a peer
    that advertises a zero window) makes the kernel abort such a connection after
    ``stream.send_timeout`` seconds instead, which ends the write with an error.
    """
    sockets = config.create_sockets()
    timeout_ms = max(1, int(engine.config.stream.send_timeout * 1000))
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
        sock.listen(config.backlog)
    return sockets


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
        config = hypercorn_config(self._engine)
        await worker_serve(
            wrap_app(self.app, config.wsgi_max_body_size, None),
            config,
            sockets=listening_sockets(self._engine, config),
            shutdown_trigger=self._stopping.wait,
            task_status=task_status,
        )
