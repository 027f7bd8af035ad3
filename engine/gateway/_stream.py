"""``/ws/v1/stream``: authenticated subscriptions to market and account channels.

The session (:class:`WsSession`) authenticates (handshake header or first frame),
watches token expiry and drain. This module validates each client frame, authorises
account channels against the token (``forbidden`` error frame, the socket stays open,
a security event), and hands the rest to the connection actor, whose sender task
writes everything the hub queued for this client.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Blueprint, Response, websocket

from actors.connection.actor import StreamConnection
from actors.connection.hub import StreamHub
from protocol import Channel, ChannelError, ErrorCode, parse_stream_frame

from ..auth import Principal, Scope
from ..context import Engine
from ._auth import forbid
from ._ws import WsSession

LOG = logging.getLogger(__name__)


def stream_blueprint(engine: Engine, hub: StreamHub) -> Blueprint:
    """Build the blueprint of ``/ws/v1/stream`` over ``hub``."""
    bp = Blueprint("stream", __name__)
    flush_timeout = engine.config.stream.drain_flush_timeout

    @bp.websocket("/ws/v1/stream")
    async def stream_ws() -> Response | None:
        """Subscriber stream: ``subscribe``/``unsubscribe``/``ping`` frames in, events out."""
        session = WsSession(engine, websocket, Scope.READ)
        refused = await session.open()
        if refused is not None:
            return refused

        async def send(text: str) -> None:
            await websocket.send(text)

        principal = session.principal
        conn = StreamConnection(
            engine,
            hub,
            send,
            session.end,
            sub=principal.sub if principal is not None else "",
            remote=session.remote,
        )

        async def identify() -> None:
            # Runs once authenticated (a first-frame token is known only then).
            if session.principal is not None:
                conn.sub = session.principal.sub
            await trio.lowlevel.checkpoint()

        def allowed(principal: Principal, channel: Channel) -> bool:
            account = channel.account
            if account is None or principal.can_read(account):
                return True
            forbid(engine, principal, f"channel:{channel.name[:64]}", remote=session.remote)
            return False

        async def handle(frame: dict[str, Any], principal: Principal) -> None:
            frame_id = frame.get("id")
            try:
                req = parse_stream_frame(frame)
            except ChannelError as exc:
                await session.malformed(frame_id if _echoable(frame_id) else None, str(exc))
                return
            channel = req.channel
            if req.op == "subscribe" and channel is not None and not allowed(principal, channel):
                conn.error(req.id, ErrorCode.FORBIDDEN, "channel not allowed for this token")
                return
            await conn.request(req)

        async def reauthorised(principal: Principal) -> None:
            # No subscription outlives the token that allowed it.
            conn.sub = principal.sub
            for name, subscriber in list(conn.subscriptions.items()):
                if not allowed(principal, subscriber.channel):
                    conn.drop(name)
                    conn.error(None, ErrorCode.FORBIDDEN, f"{name} not allowed by the new token")
            await trio.lowlevel.checkpoint()

        async def flush() -> None:
            with trio.move_on_after(flush_timeout):
                await conn.flush()

        try:
            await session.serve(
                handle,
                tasks=(identify, conn.run_sender, conn.watch_idle),
                on_frame=conn.inbound,
                on_auth=reauthorised,
                flush=flush,
            )
        finally:
            conn.shutdown()
        return None

    return bp


def _echoable(frame_id: object) -> bool:
    return (
        isinstance(frame_id, int | str)
        and not isinstance(frame_id, bool)
        and (not isinstance(frame_id, str) or len(frame_id) <= 64)
    )
