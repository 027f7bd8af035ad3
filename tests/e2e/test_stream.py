"""``/ws/v1/stream`` end to end: a server process and real WebSocket clients.

Auth matrix (header, first frame, timeouts, forged, expired, refresh), per-channel
authorisation, seq on every channel, resume of account orders with and without a gap,
wrong epoch and beyond the ledger, drain with 1001.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from loadtest.stream_client import ResumingStream, connect
from tests.kit.instruments import FUT, NIFTY_FUTURE, SBIN
from tests.kit.server import ServerProcess, call, running_server, wait_for
from tests.kit.stream import closed_with, stream_url, subscribed
from tests.kit.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INSTRUMENTS = [NIFTY_FUTURE, SBIN]
ADMIN = token("admin")
READER = token("read", accounts=["ACC1"])


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One engine on a fresh database, with instruments, accounts ACC1 and ACC2."""
    with running_server() as srv:
        body = {"instruments": INSTRUMENTS}
        assert call(srv, "PUT", "/v1/admin/instruments", body, ADMIN)[0] == 200
        for acc in ("ACC1", "ACC2"):
            status, _ = call(srv, "POST", "/v1/admin/accounts", {"id": acc, "name": acc}, ADMIN)
            assert status == 201
        tick(srv, FUT, "24000", bid="23999.95", ask="24000.05")
        wait_for(lambda: call(srv, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[0] == 200)
        yield srv


def tick(server: ServerProcess, symbol: str, ltp: str, **extra: str) -> None:
    """Push one tick through the HTTP ingest endpoint."""
    body = {"ticks": [{"symbol": symbol, "ltp": ltp, "ts": int(time.time() * 1000), **extra}]}
    assert call(server, "POST", "/v1/ingest/ticks", body, token("feed:publish"))[0] == 200


def buy(server: ServerProcess, account: str = "ACC1", quantity: int = 65) -> dict[str, Any]:
    """Place a market buy; return the order."""
    body = {"symbol": FUT, "side": "buy", "quantity": quantity, "type": "market"}
    status, order = call(
        server, "POST", f"/v1/accounts/{account}/orders", body, token("trade", accounts=[account])
    )
    assert status == 201, order
    return order  # type: ignore[no-any-return]


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("expired", token("read", ttl=-60)),
        ("wrong issuer", token("read", issuer="someone-else")),
        ("wrong audience", token("read", audience="someone-else")),
        ("bad signature", token("read", secret="another-secret-" + "x" * 40)),
        ("garbage", "not.a.token"),
        ("empty", ""),
    ],
)
async def test_bad_header_token_is_http_401_before_the_upgrade(
    server: ServerProcess, name: str, bad: str
) -> None:
    """A bad, expired or forged header token never gets an upgraded socket."""
    del name
    headers = [("Authorization", f"Bearer {bad}" if bad else "Basic abc")]
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(stream_url(server), extra_headers=headers):
            pass  # pragma: no cover - the upgrade is refused
    assert rejected.value.status_code == 401


async def test_alg_none_token_is_refused(server: ServerProcess) -> None:
    """An unsigned token (``alg: none``) with valid claims is 401."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"sub": "x", "scope": "read", "iat": now, "exp": now + 60, "iss": "tickstream"}
    claims["aud"] = "tickstream"
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(
            stream_url(server), extra_headers=[("Authorization", f"Bearer {unsigned}")]
        ):
            pass  # pragma: no cover
    assert rejected.value.status_code == 401


async def test_token_without_read_scope_is_403(server: ServerProcess) -> None:
    """A valid token without ``read`` (feed publisher) is refused with 403."""
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as rejected:
        async with connect(stream_url(server), token("feed:publish")):
            pass  # pragma: no cover
    assert rejected.value.status_code == 403


async def test_header_token_subscribes_and_pings(server: ServerProcess) -> None:
    """Header auth: the socket answers ping and subscribe at once."""
    with trio.fail_after(10):
        async with connect(stream_url(server), READER) as sock:
            frame_id = await sock.send({"op": "ping"})
            assert await sock.receive() == {"op": "pong", "id": frame_id}


async def test_first_frame_auth(server: ServerProcess) -> None:
    """No header: an ``auth`` first frame authenticates the socket."""
    with trio.fail_after(10):
        async with connect(stream_url(server), READER, header=False) as sock:
            answer = await subscribed(sock, f"quotes:{FUT}")
            assert answer["op"] == "subscribed"


@pytest.mark.parametrize(
    "first",
    [
        {"op": "auth", "token": token("read", ttl=-60)},
        {"op": "auth", "token": "forged"},
        {"op": "subscribe", "channel": f"quotes:{FUT}"},
        {"op": "auth"},
    ],
)
async def test_bad_first_frame_closes_4401(server: ServerProcess, first: dict[str, Any]) -> None:
    """A first frame that is not a valid ``auth`` closes the socket with 4401."""
    async with connect(stream_url(server), None) as sock:
        await sock.ws.send_message(json.dumps(first))
        assert await closed_with(sock) == 4401


async def test_first_frame_token_without_read_scope_closes_4403(server: ServerProcess) -> None:
    """A valid first-frame token that lacks ``read``: 4403 (forbidden), counted."""
    async with connect(stream_url(server), None) as sock:
        await sock.ws.send_message(json.dumps({"op": "auth", "token": token("feed:publish")}))
        assert await closed_with(sock) == 4403
    _, metrics = server.get("/metrics")
    assert b'tickstream_ws_closes_total{code="4403"}' in metrics


async def test_no_auth_frame_within_five_seconds_closes_4401(server: ServerProcess) -> None:
    """Silence after the upgrade: 4401 after the 5 s budget."""
    async with connect(stream_url(server), None) as sock:
        started = time.monotonic()
        assert await closed_with(sock, budget=15) == 4401
        assert time.monotonic() - started >= 4.5


async def test_token_expiry_mid_connection_closes_4401_and_refresh_keeps_it_open(
    server: ServerProcess,
) -> None:
    """A 2 s token: refreshed, the socket lives past it; not refreshed, 4401 at expiry."""
    async with connect(stream_url(server), token("read", ttl=2)) as sock:
        await sock.send({"op": "auth", "token": token("read", ttl=600)})
        await sock.until(lambda m: m.get("op") == "authenticated")
        await trio.sleep(3)
        frame_id = await sock.send({"op": "ping"})
        assert (await sock.until(lambda m: m.get("id") == frame_id))["op"] == "pong"
    async with connect(stream_url(server), token("read", accounts=["ACC1"], ttl=2)) as sock:
        assert (await subscribed(sock, "account:ACC1:orders"))["op"] == "subscribed"
        started = time.monotonic()
        assert await closed_with(sock) == 4401
        assert 0.5 < time.monotonic() - started < 5


async def test_refresh_with_narrower_token_drops_the_subscriptions_it_no_longer_allows(
    server: ServerProcess,
) -> None:
    """No subscription outlives the token that allowed it."""
    async with connect(stream_url(server), token("read", accounts=["ACC1", "ACC2"])) as sock:
        assert (await subscribed(sock, "account:ACC2:pnl"))["op"] == "subscribed"
        await sock.send({"op": "auth", "token": token("read", accounts=["ACC1"])})
        error = await sock.until(lambda m: m.get("op") == "error")
        assert error["code"] == "forbidden" and "account:ACC2:pnl" in error["message"]


# ------------------------------------------------------------------ channels


async def test_account_channel_of_another_account_is_forbidden_and_the_socket_stays(
    server: ServerProcess,
) -> None:
    """``forbidden`` error frame, counted; the connection keeps working."""
    async with connect(stream_url(server), READER) as sock:
        for kind in ("orders", "positions", "pnl", "strategies"):
            answer = await subscribed(sock, f"account:ACC2:{kind}")
            assert (answer["op"], answer["code"]) == ("error", "forbidden")
        assert (await subscribed(sock, "account:ACC1:pnl"))["op"] == "subscribed"
    _, metrics = server.get("/metrics")
    assert b'tickstream_forbidden_total{kind="channel"}' in metrics


async def test_admin_may_subscribe_to_every_account(server: ServerProcess) -> None:
    """``admin`` reads every account channel."""
    async with connect(stream_url(server), ADMIN) as sock:
        for kind in ("orders", "positions", "pnl", "strategies"):
            assert (await subscribed(sock, f"account:ACC2:{kind}"))["op"] == "subscribed"
            answer = await subscribed(sock, f"account:NOPE:{kind}")
            assert (answer["op"], answer["code"]) == ("error", "not_found")


@pytest.mark.parametrize(
    "channel",
    ["quotes:", "quotes:bad symbol", "candles:SBIN:2m", "chain:NIFTY:2026-13-01", "nope:X", 7],
)
async def test_invalid_channel_is_a_validation_error(
    server: ServerProcess, channel: object
) -> None:
    """Unknown or malformed channels answer ``validation_failed``, socket open."""
    async with connect(stream_url(server), READER) as sock:
        await sock.send({"op": "subscribe", "channel": channel, "id": 5})
        answer = await sock.until(lambda m: m.get("id") == 5)
        assert (answer["op"], answer["code"]) == ("error", "validation_failed")


async def test_quotes_snapshot_then_events_with_increasing_seq(server: ServerProcess) -> None:
    """``subscribed`` carries the latest quote; every event's seq is one more than the last."""
    async with connect(stream_url(server), READER) as sock:
        answer = await subscribed(sock, "quotes:SBIN")
        assert answer["snapshot"] is None or answer["snapshot"]["symbol"] == "SBIN"
        seq = answer["seq"]
        for price in ("801.05", "801.10", "801.15"):
            tick(server, "SBIN", price)
            event = await sock.until(lambda m: m.get("op") == "event")
            assert event["channel"] == "quotes:SBIN"
            assert event["seq"] == seq + 1
            assert event["data"]["ltp"] == price
            seq = event["seq"]


async def test_candles_and_positions_and_pnl_follow_a_fill(server: ServerProcess) -> None:
    """A fill moves positions and P&L; the candle of the tick arrives on its channel."""
    async with connect(stream_url(server), token("read", accounts=["ACC2"])) as sock:
        for channel in ("account:ACC2:positions", "account:ACC2:pnl", f"candles:{FUT}:1m"):
            assert (await subscribed(sock, channel))["op"] == "subscribed"
        buy(server, "ACC2")
        tick(server, FUT, "24001", bid="24000.95", ask="24001.05")
        seen: dict[str, dict[str, Any]] = {}
        with trio.fail_after(10):
            while len(seen) < 3:
                message = await sock.receive()
                if message.get("op") == "event":
                    seen[message["channel"]] = message["data"]
        assert seen["account:ACC2:positions"]["symbol"] == FUT
        assert seen["account:ACC2:pnl"]["realized"] == "0.00"
        assert seen[f"candles:{FUT}:1m"]["tf"] == "1m"


# ------------------------------------------------------------------ orders: lossless, resumable


async def test_order_events_are_sequenced_and_resume_replays_exactly_the_missed_ones(
    server: ServerProcess,
) -> None:
    """Disconnect, trade, resume with ``since``: every missed event once, in order."""
    channel = "account:ACC1:orders"
    async with connect(stream_url(server), READER) as sock:
        answer = await subscribed(sock, channel)
        assert answer["epoch"] == "ledger"
        epoch, seq = answer["epoch"], answer["seq"]
        buy(server)  # a filled market order: order, fill, order
        events = [await sock.until(lambda m: m.get("op") == "event") for _ in range(3)]
        assert [e["seq"] for e in events] == [seq + 1, seq + 2, seq + 3]
        assert [e["data"]["kind"] for e in events] == ["order", "fill", "order"]
        last = events[-1]["seq"]
    missed = [buy(server)["id"] for _ in range(3)]
    async with connect(stream_url(server), READER) as sock:
        answer = await subscribed(sock, channel, since=last, epoch=epoch)
        assert (answer["recovered"], answer["seq"]) == (True, last)
        assert "snapshot" not in answer
        replay = [await sock.until(lambda m: m.get("op") == "event") for _ in range(9)]
        assert [e["seq"] for e in replay] == list(range(last + 1, last + 10))
        assert [e["data"]["order"]["id"] for e in replay[::3]] == missed
        buy(server)
        live = await sock.until(lambda m: m.get("op") == "event")
        assert live["seq"] == last + 10
    async with connect(stream_url(server), READER) as sock:
        answer = await subscribed(sock, channel, since=last + 12, epoch=epoch)
        assert (answer["recovered"], answer["seq"]) == (True, last + 12)
        frame_id = await sock.send({"op": "ping"})
        assert await sock.until(lambda m: m.get("op") != "heartbeat") == {
            "op": "pong",
            "id": frame_id,
        }


@pytest.mark.parametrize(
    ("resume", "why"),
    [({"epoch": "another"}, "other epoch"), ({"epoch": "ledger", "shift": 1000}, "future")],
)
async def test_resume_that_cannot_be_exact_gives_a_fresh_snapshot(
    server: ServerProcess, resume: dict[str, Any], why: str
) -> None:
    """Wrong epoch, or a ``since`` beyond the ledger: ``recovered: false`` and a snapshot."""
    del why
    channel = "account:ACC1:orders"
    async with connect(stream_url(server), READER) as sock:
        last = (await subscribed(sock, channel))["seq"]
        answer = await subscribed(
            sock, "account:ACC1:positions"
        )  # a second channel keeps the socket busy
        assert answer["op"] == "subscribed"
    async with connect(stream_url(server), READER) as sock:
        since = max(0, last - 1) + resume.get("shift", 0)
        answer = await subscribed(sock, channel, since=since, epoch=resume["epoch"])
        assert answer["recovered"] is False
        assert answer["seq"] == last and "orders" in answer["snapshot"]


async def test_conflated_channel_resume_gives_a_fresh_snapshot(server: ServerProcess) -> None:
    """``since`` on a conflated channel: ``recovered: false`` with the latest value."""
    async with connect(stream_url(server), READER) as sock:
        answer = await subscribed(sock, f"quotes:{FUT}", since=3, epoch="x")
        assert answer["recovered"] is False and answer["snapshot"]["symbol"] == FUT


async def test_resuming_client_delivers_every_order_event_once_across_a_reconnect(
    server: ServerProcess,
) -> None:
    """The reusable client resumes by itself after the server dropped it."""
    got: list[int] = []
    with trio.fail_after(30):
        async with ResumingStream(
            stream_url(server), lambda: READER, ["account:ACC1:orders"]
        ) as stream:
            iterator = stream.__aiter__()
            while (await iterator.__anext__())["op"] != "subscribed":
                pass
            buy(server)
            while len(got) < 2:
                message = await iterator.__anext__()
                if message["op"] == "event":
                    got.append(message["seq"])
            await stream.drop()
            buy(server)
            while len(got) < 4:
                message = await iterator.__anext__()
                if message["op"] == "event":
                    got.append(message["seq"])
    assert got == list(range(got[0], got[0] + 4))
    assert stream.reconnects == 1
