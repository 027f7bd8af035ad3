"""Market data in, end to end: a server process, real WebSocket and HTTP clients."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from tests.kit.db import temporary_database
from tests.kit.server import ServerProcess, reachable_tempdir, running_server, start_server
from tests.kit.tokens import E2E_SECRET, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INSTRUMENTS = [
    {"symbol": "NIFTY", "kind": "index", "lot_size": 1, "tick_size": "0.05"},
    {
        "symbol": "NIFTY26DECFUT",
        "kind": "future",
        "underlying": "NIFTY",
        "expiry": "2026-12-29",
        "lot_size": 65,
        "tick_size": "0.05",
    },
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One engine process on a fresh database for the whole module."""
    with running_server() as srv:
        yield srv


def _request(
    server: ServerProcess, method: str, path: str, body: object, tok: str | None
) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    req = urllib.request.Request(
        server.base + path, data=json.dumps(body).encode(), headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ws_url(server: ServerProcess) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/v1/ingest"


def _auth_header(tok: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Bearer {tok}".encode())]


def test_admin_upserts_instruments_and_refuses_invalid_ones(server: ServerProcess) -> None:
    """PUT /v1/admin/instruments: admin only, all or nothing, every error listed."""
    status, body = _request(
        server, "PUT", "/v1/admin/instruments", {"instruments": INSTRUMENTS}, token("admin")
    )
    assert (status, body) == (200, {"upserted": 2})
    status, body = _request(
        server,
        "PUT",
        "/v1/admin/instruments",
        {"instruments": [{"symbol": "x", "kind": "index"}]},
        token("admin"),
    )
    assert status == 422 and body["error"]["code"] == "validation_failed"  # type: ignore[index]
    status, body = _request(
        server, "PUT", "/v1/admin/instruments", {"instruments": INSTRUMENTS}, token("read")
    )
    assert status == 403 and body["error"]["code"] == "forbidden"  # type: ignore[index]
    status, _ = _request(server, "PUT", "/v1/admin/instruments", {"instruments": []}, None)
    assert status == 401


def test_http_ingest_applies_valid_ticks_and_reports_invalid_ones(server: ServerProcess) -> None:
    """POST /v1/ingest/ticks applies the valid ticks of a mixed batch and lists the others."""
    now = _now_ms()
    ticks = [
        {"symbol": "NIFTY", "ltp": "24000.5", "ts": now},
        {"symbol": "NIFTY", "ltp": -1, "ts": now},
        {"symbol": "NIFTY", "ltp": 24001.5, "ts": now},
    ]
    status, body = _request(
        server, "POST", "/v1/ingest/ticks", {"ticks": ticks}, token("feed:publish")
    )
    assert status == 200
    assert body == {
        "accepted": 1,
        "errors": [
            {"index": 1, "field": "ltp", "reason": "not_positive"},
            {"index": 2, "field": "ltp", "reason": "not_decimal"},
        ],
    }
    status, body = _request(
        server, "POST", "/v1/ingest/ticks", {"ticks": ticks[1:]}, token("feed:publish")
    )
    assert status == 422
    status, _ = _request(server, "POST", "/v1/ingest/ticks", {"ticks": []}, token("read"))
    assert status == 403
    status, body = _request(server, "POST", "/v1/ingest/ticks", {"tick": []}, token("feed:publish"))
    assert status == 422
    _, text = server.get("/metrics")
    assert b'tickstream_ticks_total{source="http"}' in text
    assert b'tickstream_ticks_invalid_total{reason="not_positive",source="http"} 2.0' in text


async def test_ws_ingest_with_header_token_acks_and_reports_errors(server: ServerProcess) -> None:
    """A publisher with a header token sends ticks; acks and error frames come back."""
    with trio.fail_after(20):
        async with open_websocket_url(
            _ws_url(server), extra_headers=_auth_header(token("feed:publish"))
        ) as ws:
            now = _now_ms()
            await ws.send_message(
                json.dumps(
                    {
                        "op": "ticks",
                        "id": 1,
                        "ticks": [
                            {"symbol": "NIFTY26DECFUT", "ltp": "24100", "ts": now, "volume": 10}
                        ],
                    }
                )
            )
            assert json.loads(await ws.get_message()) == {"op": "ack", "id": 1, "accepted": 1}
            await ws.send_message(
                json.dumps(
                    {
                        "op": "ticks",
                        "id": 2,
                        "ticks": [
                            {"symbol": "NIFTY26DECFUT", "ltp": "24101", "ts": now},
                            {"symbol": "nifty", "ltp": "1", "ts": now},
                        ],
                    }
                )
            )
            err = json.loads(await ws.get_message())
            assert err["op"] == "error" and err["id"] == 2
            assert err["details"] == {
                "accepted": 1,
                "errors": [{"index": 1, "field": "symbol", "reason": "bad_symbol"}],
            }
            await ws.send_message(
                json.dumps({"op": "instruments", "id": 3, "instruments": INSTRUMENTS[:1]})
            )
            assert json.loads(await ws.get_message()) == {"op": "ack", "id": 3, "upserted": 1}
            await ws.send_message("not json")
            bad = json.loads(await ws.get_message())
            assert bad["op"] == "error" and bad["code"] == "validation_failed"


async def test_ws_ingest_first_frame_auth(server: ServerProcess) -> None:
    """Without a header, a first auth frame authenticates; the socket then takes ticks."""
    with trio.fail_after(20):
        async with open_websocket_url(_ws_url(server)) as ws:
            await ws.send_message(
                json.dumps({"op": "auth", "id": 0, "token": token("feed:publish")})
            )
            assert json.loads(await ws.get_message())["op"] == "authenticated"
            await ws.send_message(
                json.dumps(
                    {
                        "op": "ticks",
                        "id": 1,
                        "ticks": [{"symbol": "NIFTY", "ltp": "1", "ts": _now_ms()}],
                    }
                )
            )
            assert json.loads(await ws.get_message())["op"] == "ack"


@pytest.mark.parametrize(
    "tok",
    [
        token("feed:publish", secret="z" * 40),
        token("feed:publish", ttl=-100),
        token("feed:publish", issuer="evil"),
        "garbage",
    ],
    ids=["forged", "expired", "wrong-iss", "garbage"],
)
async def test_ws_ingest_bad_header_token_is_refused_before_upgrade(
    server: ServerProcess, tok: str
) -> None:
    """A bad header token gets HTTP 401 at the handshake, never an open socket."""
    with trio.fail_after(20), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(_ws_url(server), extra_headers=_auth_header(tok)):
            pass
    assert info.value.status_code == 401


async def test_ws_ingest_without_the_scope_is_403(server: ServerProcess) -> None:
    """A valid token without feed:publish is refused with 403 at the handshake."""
    with trio.fail_after(20), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(_ws_url(server), extra_headers=_auth_header(token("read"))):
            pass
    assert info.value.status_code == 403


async def test_ws_ingest_closes_4401_without_auth_frame(server: ServerProcess) -> None:
    """No header and a non-auth first frame: the socket closes with 4401."""
    with trio.fail_after(20):
        async with open_websocket_url(_ws_url(server)) as ws:
            await ws.send_message(json.dumps({"op": "ticks", "ticks": []}))
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 4401


async def test_ws_ingest_closes_4401_when_the_token_expires(server: ServerProcess) -> None:
    """A token that expires mid-connection without refresh closes the socket with 4401."""
    short = token("feed:publish", ttl=2, now=int(time.time()) - 8)  # 2 s left with 10 s leeway
    with trio.fail_after(20):
        async with open_websocket_url(_ws_url(server), extra_headers=_auth_header(short)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 4401


async def test_ws_ingest_malformed_frames_past_the_budget_close_1008(
    server: ServerProcess,
) -> None:
    """Garbage frames are answered, then past the budget the socket closes with 1008."""
    with trio.fail_after(20):
        async with open_websocket_url(
            _ws_url(server), extra_headers=_auth_header(token("feed:publish"))
        ) as ws:
            answered = 0
            with pytest.raises(ConnectionClosed) as info:  # noqa: PT012 - the loop ends by closing
                for _ in range(50):
                    await ws.send_message("{")
                    await ws.get_message()
                    answered += 1
            assert info.value.reason.code == 1008
            assert answered == 10


def test_sigterm_closes_open_websockets_with_1001() -> None:
    """On SIGTERM the server closes every WebSocket with 1001 and exits 0."""
    codes: list[int] = []
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        srv = start_server(
            workdir, {"TICKSTREAM_DATABASE_URL": dsn, "TICKSTREAM_JWT_SECRET": E2E_SECRET}
        )
        srv.wait_healthy()

        async def client() -> None:
            with trio.fail_after(30):
                await _client()

        async def _client() -> None:
            async with open_websocket_url(
                _ws_url(srv), extra_headers=_auth_header(token("feed:publish"))
            ) as ws:
                await ws.send_message(json.dumps({"op": "ticks", "id": 1, "ticks": []}))
                await ws.get_message()
                srv.proc.send_signal(signal.SIGTERM)
                try:
                    await ws.get_message()
                except ConnectionClosed as exc:
                    codes.append(exc.reason.code)

        trio.run(client)
        assert srv.proc.wait(timeout=30) == 0, srv.output()[-3000:]
    assert codes == [1001]
