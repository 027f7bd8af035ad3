"""One authenticated WebSocket session: handshake auth, first-frame auth, expiry, drain.

Authentication: an ``Authorization: Bearer`` header is checked before the upgrade
(a bad one answers HTTP 401, never an upgraded socket). Without a header, the first
frame must be ``{"op": "auth", "token": ...}`` within ``AUTH_TIMEOUT`` seconds, else
the socket closes with 4401. A later ``auth`` frame refreshes the token; at expiry
without refresh the socket closes with 4401. Malformed frames past a budget close
it with 1008; when the engine drains, it closes with 1001.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio
from quart import Response
from quart.wrappers.websocket import Websocket

import protocol
from protocol import ErrorCode, ProtocolError

from ..auth import AuthError, Principal, Scope
from ..context import Engine
from ._auth import authenticate, bearer_token, forbid
from ._responses import error_response

LOG = logging.getLogger(__name__)

AUTH_TIMEOUT: Final = 5.0  # seconds for the first-frame auth
MALFORMED_BUDGET: Final = 10  # malformed frames tolerated per connection before 1008
MS_PER_S: Final = 1000
CLOSE_TIMEOUT: Final = 5.0  # seconds to send our close and read until the client's


class CloseCode:
    """WebSocket close codes of PROTOCOL.md."""

    UNAUTHENTICATED: Final = 4401
    FORBIDDEN: Final = 4403
    SLOW_CONSUMER: Final = 4008
    RATE_LIMITED: Final = 4429
    GOING_AWAY: Final = 1001
    POLICY: Final = 1008
    TOO_BIG: Final = 1009


Handler = Callable[[dict[str, Any], Principal], Awaitable[None]]
Task = Callable[[], Awaitable[None]]


class _Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WsSession:
    """Authentication and lifecycle of one server-side WebSocket."""

    def __init__(self, engine: Engine, ws: Websocket, scope: Scope) -> None:
        self._engine = engine
        self._ws = ws
        self._scope = scope
        self.principal: Principal | None = None
        self._expiry_changed = trio.Event()
        self._malformed = 0
        self._send_lock = trio.Lock()
        self._cancel = trio.CancelScope()
        self._close: tuple[int, str] | None = None
        self._on_auth: Callable[[Principal], Awaitable[None]] | None = None
        self._on_frame: Callable[[], bool] | None = None
        self._flush: Task | None = None
        self.remote = ws.remote_addr

    async def open(self) -> Response | None:
        """Check a handshake token; return an HTTP error response to refuse the upgrade."""
        token = bearer_token(self._ws.headers)
        if token is None:
            return None
        try:
            principal = authenticate(self._engine, token, remote=self.remote)
        except AuthError as exc:
            return error_response(exc)
        if not principal.has(self._scope):
            return error_response(
                forbid(self._engine, principal, f"scope:{self._scope}", remote=self.remote)
            )
        self.principal = principal
        return None

    async def send(self, message: Mapping[str, object]) -> None:
        """Send one JSON frame (frames of concurrent senders never interleave)."""
        async with self._send_lock:
            await self._ws.send(protocol.dumps(message).decode())

    async def send_error(
        self,
        frame_id: object,
        code: ErrorCode | str,
        message: str,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Send an ``error`` frame; ``details`` is an extension PROTOCOL.md allows."""
        frame: dict[str, object] = {"op": "error", "code": str(code), "message": message}
        if frame_id is not None:
            frame["id"] = frame_id
        if details:
            frame["details"] = dict(details)
        await self.send(frame)

    async def malformed(self, frame_id: object, message: str) -> None:
        """Answer a malformed frame; past the budget close the socket with 1008."""
        self.spend_malformed()
        await self.send_error(frame_id, ErrorCode.VALIDATION_FAILED, message)

    def spend_malformed(self) -> None:
        """Count a malformed frame the caller answers itself; past the budget: 1008."""
        self._malformed += 1
        self._engine.metrics.ws_malformed.inc()
        if self._malformed > MALFORMED_BUDGET:
            raise _Closed(CloseCode.POLICY, "too many malformed frames")

    async def serve(
        self,
        handle: Handler,
        *,
        tasks: tuple[Task, ...] = (),
        on_frame: Callable[[], bool] | None = None,
        on_auth: Callable[[Principal], Awaitable[None]] | None = None,
        flush: Task | None = None,
    ) -> None:
        """Accept, authenticate, then pass every frame to ``handle`` until the socket ends.

        The reader, the drain watcher and the expiry watcher run in one nursery;
        whichever ends the session first records the close code and cancels the rest.

        Args:
            tasks: run beside the reader once the client is authenticated (e.g. a sender).
            on_frame: called for every frame received after authentication, before it is
                decoded; returning False drops it (the callee has ended the session).
            on_auth: awaited after a later ``auth`` frame changed the principal.
            flush: awaited when the engine drains, before the socket closes with 1001
                (the callee bounds its own wait).
        """
        self._on_frame, self._on_auth, self._flush = on_frame, on_auth, flush
        await self._ws.accept()
        engine = self._engine
        engine.metrics.ws_connections.inc()
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._watch_drain)
                nursery.start_soon(self._read, handle, nursery, tasks)
        finally:
            engine.metrics.ws_connections.dec()
        code, reason = self._close or (1000, "")
        engine.metrics.ws_closes.labels(str(code)).inc()
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            await self._ws.close(code, reason)
            # NOTE: keep reading (and discarding) until the client's close arrives. The
            # server's queue of received frames is bounded: left full by a client that
            # kept sending after we stopped reading, it would never take the client's
            # close, and the connection would hang half-closed for good.
            while True:
                await self._ws.receive()

    def end(self, code: int, reason: str) -> None:
        """End the session with close ``code`` (the first code recorded wins); never waits."""
        if self._close is None:
            self._close = (code, reason)
        self._cancel.cancel()

    async def _read(self, handle: Handler, nursery: trio.Nursery, tasks: tuple[Task, ...]) -> None:
        try:
            if self.principal is None:
                await self._first_frame_auth()
            nursery.start_soon(self._watch_expiry)
            for task in tasks:
                nursery.start_soon(task)
            on_frame = self._on_frame
            while True:
                raw = await self._ws.receive()
                if on_frame is not None and not on_frame():
                    continue
                await self._dispatch(raw, handle)
        except _Closed as closed:
            self.end(closed.code, closed.reason)

    async def _watch_drain(self) -> None:
        await self._engine.lifecycle.draining.wait()
        if self._flush is not None:
            await self._flush()
        self.end(CloseCode.GOING_AWAY, "server draining")

    async def _first_frame_auth(self) -> None:
        with trio.move_on_after(AUTH_TIMEOUT):
            raw = await self._ws.receive()
            frame = self._decode(raw)
            if (
                frame is None
                or frame.get("op") != "auth"
                or not isinstance(frame.get("token"), str)
            ):
                raise _Closed(CloseCode.UNAUTHENTICATED, "first frame must be auth")
            await self._auth_frame(frame)
            return
        raise _Closed(CloseCode.UNAUTHENTICATED, "no auth frame in time")

    async def _auth_frame(self, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        try:
            principal = authenticate(self._engine, str(token or ""), remote=self.remote)
        except AuthError:
            raise _Closed(CloseCode.UNAUTHENTICATED, "invalid token") from None
        if not principal.has(self._scope):
            forbid(self._engine, principal, f"scope:{self._scope}", remote=self.remote)
            raise _Closed(CloseCode.FORBIDDEN, "forbidden")
        refreshed = self.principal is not None
        self.principal = principal
        self._expiry_changed.set()
        if refreshed and self._on_auth is not None:
            await self._on_auth(principal)
        if "id" in frame:
            await self.send({"op": "authenticated", "id": frame["id"], "exp": principal.expires_at})

    async def _watch_expiry(self) -> None:
        while self.principal is not None:
            self._expiry_changed = trio.Event()
            left = self.principal.expires_at - self._engine.clock() / MS_PER_S
            with trio.move_on_after(max(0.0, left)):
                await self._expiry_changed.wait()
                continue
            self._engine.metrics.auth_failures.labels("expired_in_session").inc()
            self.end(CloseCode.UNAUTHENTICATED, "token expired")
            return

    def _decode(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            frame = protocol.loads(raw)
        except ProtocolError:
            return None
        return frame if isinstance(frame, dict) else None

    async def _dispatch(self, raw: str | bytes, handle: Handler) -> None:
        frame = self._decode(raw)
        if frame is None:
            await self.malformed(None, "frame is not a JSON object")
            return
        if frame.get("op") == "auth":
            await self._auth_frame(frame)
            return
        assert self.principal is not None  # noqa: S101 - authenticated before dispatch
        # NOTE: the handler may wait (backpressure) after it is done with the frame; not
        # holding it here lets the handler release a large frame before that wait.
        handling = handle(frame, self.principal)
        del frame
        await handling
