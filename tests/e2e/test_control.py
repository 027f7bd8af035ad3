"""``/ws/v1/control`` end to end: a server process, real WebSocket clients, the CLI.

Every command once; a non-admin token refused (403 at the handshake, 4403 after a
first-frame token); halt → 409 ``account_halted`` → resume → 201; kick closes one
stream socket with 4403 while another stays; restart keeps positions; feed pause
discards ticks; audit rows newest first; the CLI as a subprocess; drain → 1001.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from loadtest.stream_client import StreamSocket, connect
from tests.kit.instruments import FUT, NIFTY_FUTURE
from tests.kit.server import ServerProcess, call, running_server, wait_for
from tests.kit.stream import closed_with, subscribed
from tests.kit.tokens import token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INSTRUMENTS = [NIFTY_FUTURE]
ADMIN = token("admin", sub="ops-alice")
READER = token("read", accounts=["ACC1", "ACC2"], sub="reader")
TRADER = token("trade", "read", accounts=["ACC1", "ACC2"], sub="trader")


@contextmanager
def _running(*, clean_exit: bool = False) -> Iterator[ServerProcess]:
    with running_server(clean_exit=clean_exit) as srv:
        body = {"instruments": INSTRUMENTS}
        assert call(srv, "PUT", "/v1/admin/instruments", body, ADMIN)[0] == 200
        for acc in ("ACC1", "ACC2"):
            body = {"id": acc, "name": acc}
            assert call(srv, "POST", "/v1/admin/accounts", body, ADMIN)[0] == 201
        tick(srv, "24000")
        wait_for(lambda: call(srv, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[0] == 200)
        yield srv


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One engine on a fresh database, with an instrument, a quote, ACC1 and ACC2."""
    with _running() as srv:
        yield srv


def control_url(server: ServerProcess) -> str:
    """The control endpoint of ``server``."""
    return f"ws://127.0.0.1:{server.port}/ws/v1/control"


def stream_url(server: ServerProcess) -> str:
    """The stream endpoint of ``server``."""
    return f"ws://127.0.0.1:{server.port}/ws/v1/stream"


def tick(server: ServerProcess, ltp: str) -> None:
    """Push one tick through the HTTP ingest endpoint."""
    body = {"ticks": [{"symbol": FUT, "ltp": ltp, "ts": int(time.time() * 1000)}]}
    assert call(server, "POST", "/v1/ingest/ticks", body, token("feed:publish"))[0] == 200


def order(server: ServerProcess, account: str = "ACC1") -> tuple[int, Any]:
    """Place a market buy of one lot; return (status, body)."""
    body = {"symbol": FUT, "side": "buy", "quantity": 65, "type": "market"}
    return call(server, "POST", f"/v1/accounts/{account}/orders", body, TRADER)


def metric(server: ServerProcess, name: str) -> float:
    """The value of an unlabelled sample in ``/metrics`` (0 when absent)."""
    text = server.get("/metrics")[1].decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def send(server: ServerProcess, cmd: str, tok: str = ADMIN, **args: object) -> dict[str, Any]:
    """Send one command over a fresh control socket; return the ``result`` frame."""
    headers = [("Authorization", f"Bearer {tok}")]
    with trio.fail_after(20):
        async with open_websocket_url(control_url(server), extra_headers=headers) as ws:
            await ws.send_message(
                orjson.dumps({"op": "command", "id": 9, "cmd": cmd, "args": args}).decode()
            )
            answer: dict[str, Any] = orjson.loads(await ws.get_message())
    assert answer["op"] == "result"
    assert answer["id"] == 9
    return answer


async def subscribe(sock: StreamSocket, channel: str) -> None:
    """Subscribe and check the ``subscribed`` answer."""
    answer = await subscribed(sock, channel)
    assert answer["op"] == "subscribed", answer


# ------------------------------------------------------------------ authorisation


async def test_non_admin_header_token_is_403_before_the_upgrade(server: ServerProcess) -> None:
    """A valid token without scope ``admin`` never gets a control socket."""
    headers = [("Authorization", f"Bearer {READER}")]
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(control_url(server), extra_headers=headers):
            pass  # pragma: no cover - the upgrade is refused
    assert rejected.value.status_code == 403


async def test_non_admin_first_frame_token_closes_4403(server: ServerProcess) -> None:
    """A first-frame token without scope ``admin`` closes the socket with 4403."""
    with trio.fail_after(10):
        async with open_websocket_url(control_url(server)) as ws:
            await ws.send_message(orjson.dumps({"op": "auth", "token": READER}).decode())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason.code == 4403


async def test_admin_first_frame_token_runs_commands(server: ServerProcess) -> None:
    """An admin first-frame token authenticates; commands answer with their id."""
    with trio.fail_after(10):
        async with open_websocket_url(control_url(server)) as ws:
            await ws.send_message(orjson.dumps({"op": "auth", "token": ADMIN, "id": 1}).decode())
            assert orjson.loads(await ws.get_message())["op"] == "authenticated"
            await ws.send_message(orjson.dumps({"op": "command", "id": 2, "cmd": "stats"}).decode())
            answer = orjson.loads(await ws.get_message())
    assert (answer["id"], answer["ok"]) == (2, True)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("no.such.command", {}),
        ("account.halt", {}),
        ("account.halt", {"account": "ACC1", "extra": 1}),
        ("log.level", {"level": "LOUD"}),
        ("connection.kick", {"connection": "one"}),
    ],
)
async def test_invalid_commands_are_refused_not_crashed(
    server: ServerProcess, cmd: str, args: dict[str, object]
) -> None:
    """Unknown commands and bad arguments answer ok:false validation_failed; socket lives."""
    answer = await send(server, cmd, **args)
    assert answer["ok"] is False
    assert answer["error"]["code"] == "validation_failed"
    assert (await send(server, "stats"))["ok"] is True


# ------------------------------------------------------------------ commands


async def test_stats_reports_live_counts(server: ServerProcess) -> None:
    """``stats`` counts the stream connection and subscription a client holds."""
    async with connect(stream_url(server), READER) as sock:
        await subscribe(sock, f"quotes:{FUT}")
        data = (await send(server, "stats"))["data"]
    assert data["stream"]["connections"] >= 1
    assert data["stream"]["subscriptions"] >= 1
    assert data["ws_connections"] >= 2  # the stream socket and this control socket
    assert data["accounts"]["total"] == 2
    assert data["accounts"]["by_state"].get("running") == 2
    assert "lag_ms" in data["feed"]
    assert data["bus"]["kind"]
    assert data["draining"] is False


async def test_accounts_list(server: ServerProcess) -> None:
    """``accounts.list`` lists every account with its live state."""
    items = (await send(server, "accounts.list"))["data"]["items"]
    assert [(i["id"], i["state"]) for i in items] == [("ACC1", "running"), ("ACC2", "running")]


async def test_halt_refuses_orders_409_and_resume_lets_them_through(
    server: ServerProcess,
) -> None:
    """Halt: new orders 409 ``account_halted`` (persisted); resume: 201 again."""
    assert (await send(server, "account.halt", account="ACC2"))["data"]["halted"] is True
    status, body = order(server, "ACC2")
    assert (status, body["error"]["code"]) == (409, "account_halted")
    rows = (await send(server, "accounts.list"))["data"]["items"]
    acc2 = next(r for r in rows if r["id"] == "ACC2")
    assert (acc2["status"], acc2["halted"]) == ("halted", True)
    # A restart reads the halt back from accounts.status.
    assert (await send(server, "account.restart", account="ACC2"))["ok"] is True
    assert order(server, "ACC2")[0] == 409
    assert (await send(server, "account.resume", account="ACC2"))["data"]["halted"] is False
    status, body = order(server, "ACC2")
    assert status == 201, body


async def test_halt_of_an_unknown_account_is_not_found(server: ServerProcess) -> None:
    """A well-formed command on a missing account answers ok:false ``not_found``."""
    answer = await send(server, "account.halt", account="NOPE")
    assert (answer["ok"], answer["error"]["code"]) == (False, "not_found")


async def test_restart_keeps_positions(server: ServerProcess) -> None:
    """``account.restart`` rebuilds the actor from the ledger: positions are unchanged."""
    assert order(server, "ACC1")[0] == 201
    before = call(server, "GET", "/v1/accounts/ACC1/positions", tok=TRADER)[1]["items"]
    assert before
    answer = await send(server, "account.restart", account="ACC1")
    assert answer == {
        "op": "result",
        "id": 9,
        "ok": True,
        "data": {"account": "ACC1", "restarted": True},
    }
    status, after = call(server, "GET", "/v1/accounts/ACC1/positions", tok=TRADER)
    assert status == 200
    nets = [(p["symbol"], p["net_quantity"]) for p in after["items"]]
    assert nets == [(p["symbol"], p["net_quantity"]) for p in before]


async def test_feed_pause_discards_ticks_and_resume_applies_them(server: ServerProcess) -> None:
    """Paused: ticks are counted in ``tickstream_ticks_paused_total``, quotes stand still."""
    assert (await send(server, "feed.pause"))["data"] == {"paused": True}
    before = metric(server, "tickstream_ticks_paused_total")
    quote = call(server, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[1]
    tick(server, "24111")
    wait_for(lambda: metric(server, "tickstream_ticks_paused_total") > before)
    assert metric(server, "tickstream_ticks_paused_total") == before + 1
    assert call(server, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[1]["ltp"] == quote["ltp"]
    stats = (await send(server, "stats"))["data"]
    assert stats["feed"]["paused"] is True
    assert (await send(server, "feed.resume"))["data"] == {"paused": False}
    tick(server, "24222")
    wait_for(lambda: call(server, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[1]["ltp"] == "24222")
    assert call(server, "GET", f"/v1/quotes/{FUT}", tok=ADMIN)[1]["ltp"] == "24222"


async def test_log_level_changes_the_root_level(server: ServerProcess) -> None:
    """``log.level`` sets the root level; the next call reports it as the previous one."""
    first = (await send(server, "log.level", level="WARNING"))["data"]
    assert first["level"] == "WARNING"
    second = (await send(server, "log.level", level="INFO"))["data"]
    assert second == {"level": "INFO", "previous": "WARNING"}


async def test_connections_list_and_kick_one_of_two(server: ServerProcess) -> None:
    """Kick closes the chosen stream socket with 4403; the other one keeps working."""
    kicked_tok = token("read", sub="kick-me")
    kept_tok = token("read", sub="keep-me")
    async with (
        connect(stream_url(server), kicked_tok) as kicked,
        connect(stream_url(server), kept_tok) as kept,
    ):
        await subscribe(kicked, f"quotes:{FUT}")
        await subscribe(kicked, f"candles:{FUT}:1m")
        await subscribe(kept, f"quotes:{FUT}")
        items = (await send(server, "connections.list"))["data"]["items"]
        by_sub = {i["sub"]: i for i in items}
        assert by_sub["kick-me"]["subscriptions"] == 2
        assert by_sub["keep-me"]["subscriptions"] == 1
        assert by_sub["kick-me"]["remote"]
        assert {"id", "sub", "remote", "subscriptions", "queued"} <= set(by_sub["kick-me"])
        answer = await send(server, "connection.kick", connection=by_sub["kick-me"]["id"])
        assert answer["data"]["close_code"] == 4403
        assert await closed_with(kicked) == 4403
        frame_id = await kept.send({"op": "ping"})
        assert (await kept.until(lambda m: m.get("id") == frame_id))["op"] == "pong"
        # The kicked socket leaves the registry once its close handshake is over.
        with trio.fail_after(10):
            while True:
                items = (await send(server, "connections.list"))["data"]["items"]
                left = {i["sub"] for i in items}
                if "kick-me" not in left:
                    break
                await trio.sleep(0.05)
        assert "keep-me" in left
    again = await send(server, "connection.kick", connection=by_sub["kick-me"]["id"])
    assert (again["ok"], again["error"]["code"]) == (False, "not_found")


# ------------------------------------------------------------------ audit


async def test_audit_lists_commands_newest_first(server: ServerProcess) -> None:
    """Every command (refused ones too) is an audit row; the endpoint lists newest first."""
    await send(server, "accounts.list")
    await send(server, "account.halt", account="NOPE")
    await send(server, "bogus.cmd", x=1)
    status, body = call(server, "GET", "/v1/admin/audit?limit=3", tok=ADMIN)
    assert status == 200
    items = body["items"]
    assert [(i["cmd"], i["ok"]) for i in items] == [
        ("bogus.cmd", False),
        ("account.halt", False),
        ("accounts.list", True),
    ]
    assert items[1]["args"] == {"account": "NOPE"}
    assert all(i["sub"] == "ops-alice" for i in items)
    assert items[0]["ts"] >= items[1]["ts"] >= items[2]["ts"]
    status, page = call(server, "GET", "/v1/admin/audit?limit=2&offset=1", tok=ADMIN)
    assert [i["cmd"] for i in page["items"]] == ["account.halt", "accounts.list"]
    # Each one is also a structured security event and a counted command.
    assert "security event: admin command" in server.output()
    assert "bogus.cmd" in server.output()
    assert metric(server, 'tickstream_control_commands_total{cmd="unknown",ok="false"}') >= 1
    listed = metric(server, 'tickstream_control_commands_total{cmd="accounts.list",ok="true"}')
    await send(server, "accounts.list")
    assert (
        metric(server, 'tickstream_control_commands_total{cmd="accounts.list",ok="true"}')
        == listed + 1
    )


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=x", "offset=-1", "page=2"])
def test_audit_bad_paging_is_422(server: ServerProcess, query: str) -> None:
    """``limit`` outside 1..500, a negative ``offset`` or an unknown parameter is 422."""
    status, body = call(server, "GET", f"/v1/admin/audit?{query}", tok=ADMIN)
    assert (status, body["error"]["code"]) == (422, "validation_failed")


def test_audit_needs_admin(server: ServerProcess) -> None:
    """A non-admin token is 403 on the audit endpoint, no token 401."""
    assert call(server, "GET", "/v1/admin/audit", tok=READER)[0] == 403
    assert call(server, "GET", "/v1/admin/audit")[0] == 401


# ------------------------------------------------------------------ CLI


def run_cli(
    server: ServerProcess, *args: str, tok: str | None = ADMIN
) -> subprocess.CompletedProcess[str]:
    """Run ``tickstream control ARGS`` against ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    if tok is not None:
        env["TICKSTREAM_TOKEN"] = tok
    return subprocess.run(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "engine.main", "control", *args, "--url", control_url(server)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_prints_the_result_and_exits_by_outcome(server: ServerProcess) -> None:
    """Exit 0 and the JSON result when ok, 1 when ok:false, 2 for a refused token."""
    done = run_cli(server, "accounts.list")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["data"]["items"][0]["id"] == "ACC1"
    failed = run_cli(server, "account.halt", "--account", "NOPE")
    assert failed.returncode == 1
    assert orjson.loads(failed.stdout)["error"]["code"] == "not_found"
    refused = run_cli(server, "stats", tok=READER)
    assert refused.returncode == 2
    assert "403" in refused.stderr
    assert run_cli(server, "stats", tok=None).returncode == 2


def test_cli_unreachable_server_exits_2(server: ServerProcess) -> None:
    """A closed port is a connection error: exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    done = subprocess.run(  # noqa: S603 (our own CLI)
        [
            sys.executable,
            "-m",
            "engine.main",
            "control",
            "stats",
            "--token",
            ADMIN,
            "--url",
            "ws://127.0.0.1:9/ws/v1/control",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    del server
    assert done.returncode == 2
    assert "cannot reach" in done.stderr


# ------------------------------------------------------------------ drain


async def test_drain_closes_streams_1001_and_refuses_new_work() -> None:
    """engine.drain: the result arrives, stream sockets close 1001, /ready and orders 503."""
    with _running(clean_exit=True) as srv:
        async with connect(stream_url(srv), READER) as sock:
            await subscribe(sock, f"quotes:{FUT}")
            answer = await send(srv, "engine.drain")
            assert answer["data"] == {"draining": True}
            assert await closed_with(sock) == 1001
        status, ready = call(srv, "GET", "/ready")
        assert (status, ready["status"]) == (503, "draining")
        status, body = order(srv, "ACC1")
        assert (status, body["error"]["code"]) == (503, "busy")
