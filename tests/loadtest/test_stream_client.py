"""The reusable stream client against a scripted server: a silent socket is a dead one."""

from __future__ import annotations

from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from loadtest.stream_client import ResumingStream

CHANNEL = "quotes:NIFTY"


async def test_a_silent_socket_is_abandoned_and_the_stream_resumes_after_its_last_event() -> None:
    """The first socket goes quiet after one event (no heartbeat, no pong, no close): after
    ``silence_timeout`` the client reconnects and resubscribes from that event."""
    subscribes: list[dict[str, Any]] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            subscribes.append(orjson.loads(await ws.get_message()))
            # First socket: subscribed at 5, event 6, then silent and never closed.
            # Second: the resumed subscription at 6, then event 7.
            first = len(subscribes) == 1
            for frame in (
                {"op": "subscribed", "channel": CHANNEL, "epoch": "E", "seq": 5 if first else 6},
                {"op": "event", "channel": CHANNEL, "seq": 6 if first else 7},
            ):
                await ws.send_message(orjson.dumps(frame).decode())
            await trio.sleep_forever()
        except ConnectionClosed:
            return

    got: list[tuple[str, int]] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/ws/v1/stream"
            async with ResumingStream(url, lambda: "token", [CHANNEL], silence_timeout=0.5) as s:
                async for message in s:
                    got.append((message["op"], message["seq"]))
                    if message["seq"] == 7:
                        break
            nursery.cancel_scope.cancel()
    assert got == [("subscribed", 5), ("event", 6), ("subscribed", 6), ("event", 7)]
    assert subscribes[1]["since"] == 6 and subscribes[1]["epoch"] == "E"
    assert "since" not in subscribes[0]
    assert (s.silent, s.reconnects) == (1, 1)
