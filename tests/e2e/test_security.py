"""Security at the edge, against a real server process: API keys, lockout, CORS, headers,
body limit (with and without Content-Length), TLS with a certificate made here, kid rotation."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trustme
from trio_websocket import ConnectionRejected, open_websocket_url

from engine.auth import issue_token
from tests.kit.db import temporary_database
from tests.kit.server import ServerProcess, call, reachable_tempdir, start_server
from tests.kit.tokens import E2E_SECRET, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ORIGIN = "https://app.example.com"
BODY_LIMIT = 65536
REPO = Path.cwd()


def write_config(workdir: Path, **replace: str) -> Path:
    """Write a copy of config/default.toml with some lines replaced; return its path."""
    text = (REPO / "config" / "default.toml").read_text()
    text = text.replace('calendar_dir = ""', f'calendar_dir = "{REPO / "config" / "calendar"}"')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = workdir / "tickstream.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """A server with a CORS allowlist and a small body limit; the env its CLI needs."""
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        cfg = write_config(
            workdir,
            **{
                "cors_origins = []": f'cors_origins = ["{ORIGIN}"]',
                "max_body_bytes = 33554432": f"max_body_bytes = {BODY_LIMIT}",
                "lockout_failures = 5": "lockout_failures = 3",
            },
        )
        env = {
            "TICKSTREAM_DATABASE_URL": dsn,
            "TICKSTREAM_JWT_SECRET": E2E_SECRET,
            "TICKSTREAM_CONFIG": str(cfg),
        }
        srv = start_server(workdir, env)
        try:
            srv.wait_healthy()
            for acc in ("ACC1", "ACC2"):
                body = {"id": acc, "name": acc}
                assert call(srv, "POST", "/v1/admin/accounts", body, token("admin"))[0] == 201
            yield srv, env
        finally:
            srv.stop(signal.SIGTERM)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tickstream apikey ARGS`` as a process with ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "engine.main", "apikey", *args],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def raw(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request from a chosen loopback source address; (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        h = {"Content-Type": "application/json", **(headers or {})}
        conn.request(
            method, path, body=data, headers=h, encode_chunked=not isinstance(data, bytes | None)
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def exchange(port: int, key: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str], Any]:
    """POST /v1/auth/token from ``source``."""
    status, headers, body = raw(port, "POST", "/v1/auth/token", {"api_key": key}, source=source)
    return status, headers, orjson.loads(body)


def test_api_key_lifecycle(site: tuple[ServerProcess, dict[str, str]]) -> None:
    """CLI create → exchange → call with the token → CLI revoke → the next exchange is 401."""
    srv, env = site
    made = cli(env, "create", "--user", "carol", "--accounts", "ACC1", "--scope", "read trade")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("tsk_") and made.stdout.count(key) == 1
    status, _, body = exchange(srv.port, key)
    assert status == 200 and body["token_type"] == "bearer" and body["expires_in"] == 900
    status, accounts = call(srv, "GET", "/v1/accounts", tok=body["access_token"])
    assert status == 200 and [a["id"] for a in accounts["items"]] == ["ACC1"]
    assert call(srv, "GET", "/v1/accounts/ACC2/orders", tok=body["access_token"])[0] == 403

    listed = cli(env, "list")
    assert listed.returncode == 0 and "carol" in listed.stdout
    secret = key.split("_", 2)[2]  # the secret itself may hold "_" (urlsafe base64)
    assert len(secret) == 43 and key not in listed.stdout and secret not in listed.stdout
    key_id = next(line.split("\t")[0] for line in listed.stdout.splitlines() if "carol" in line)
    revoked = cli(env, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    status, _, body = exchange(srv.port, key)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    assert key not in srv.output()
    assert cli(env, "create", "--user", "x", "--scope", "read write").returncode == 2


def test_lockout_per_address(site: tuple[ServerProcess, dict[str, str]]) -> None:
    """3 bad keys from one address → 429 + Retry-After there; another address still works."""
    srv, env = site
    made = cli(env, "create", "--user", "dave", "--scope", "read")
    good = made.stdout.strip().splitlines()[-1]
    bad = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    statuses = [exchange(srv.port, bad, source="127.0.0.2")[0] for _ in range(3)]
    assert statuses == [401, 401, 429]
    status, headers, body = exchange(srv.port, good, source="127.0.0.2")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(headers["retry-after"]) > 800
    assert exchange(srv.port, good, source="127.0.0.3")[0] == 200
    metrics = srv.get("/metrics")[1].decode()
    assert 'tickstream_auth_failures_total{reason="unknown_key"} 3.0' in metrics
    assert 'tickstream_rate_limited_total{limit="auth_lockout"}' in metrics
    log = [orjson.loads(x) for x in srv.output().splitlines() if x.startswith("{")]
    events = [x for x in log if x.get("event", "").startswith("security event: api key")]
    assert events and all(bad not in json.dumps(x) for x in events)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/health", None, 200),
        ("GET", "/nope", None, 404),
        ("POST", "/v1/auth/token", {}, 422),
    ],
)
def test_security_headers(
    site: tuple[ServerProcess, dict[str, str]], method: str, path: str, body: Any, status: int
) -> None:
    """Every answer carries the security headers; plain http gets no HSTS."""
    got, headers, _ = raw(site[0].port, method, path, body)
    assert got == status
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "strict-transport-security" not in headers


def test_cors(site: tuple[ServerProcess, dict[str, str]]) -> None:
    """The listed origin is allowed, others get no CORS header; preflights are answered."""
    port = site[0].port
    _, ok, _ = raw(port, "GET", "/health", headers={"Origin": ORIGIN})
    assert ok["access-control-allow-origin"] == ORIGIN
    _, evil, _ = raw(port, "GET", "/health", headers={"Origin": "https://evil.example"})
    assert not [h for h in evil if h.startswith("access-control-")]
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, pre, _ = raw(port, "OPTIONS", "/v1/auth/token", headers={"Origin": ORIGIN, **asked})
    assert status == 204 and pre["access-control-allow-origin"] == ORIGIN
    assert "POST" in pre["access-control-allow-methods"]
    status, pre, _ = raw(
        port, "OPTIONS", "/v1/auth/token", headers={"Origin": "https://evil.example", **asked}
    )
    assert status == 204 and "access-control-allow-origin" not in pre


def test_body_limit_with_and_without_content_length(
    site: tuple[ServerProcess, dict[str, str]],
) -> None:
    """Over server.max_body_bytes → 413 body_too_large, declared or chunked."""
    port, tok = site[0].port, token("feed:publish")
    auth = {"Authorization": f"Bearer {tok}"}
    big = b'{"ticks": [' + b" " * (BODY_LIMIT + 10) + b"]}"
    status, headers, body = raw(port, "POST", "/v1/ingest/ticks", big, auth)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "body_too_large"
    assert headers["x-content-type-options"] == "nosniff"

    def chunks() -> Iterator[bytes]:
        yield b'{"ticks": ['
        for _ in range(BODY_LIMIT // 4096 + 2):
            yield b" " * 4096
        yield b"]}"

    status, headers, body = raw(port, "POST", "/v1/ingest/ticks", chunks(), auth)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "body_too_large"
    small = raw(port, "POST", "/v1/ingest/ticks", iter([b'{"ticks": []}']), auth)
    assert small[0] == 200  # chunked and under the limit: read and served


# ------------------------------------------------------------------ TLS and kid rotation


def _https(port: int, path: str, ca: Path, tok: str | None = None) -> tuple[int, dict[str, str]]:
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {tok}"} if tok else {})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _signed(secret: str, kid: str, scope: str = "read") -> str:
    now = int(time.time())
    return issue_token(
        secret,
        sub="ops",
        scopes=[scope],
        now=now,
        ttl=600,
        issuer="tickstream",
        audience="tickstream",
        kid=kid,
    )


def test_tls_listener_and_kid_rotation() -> None:
    """https with a certificate made here; tokens verify by kid; a retired kid is 401."""
    old, new = "o" * 40, "n" * 40
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with reachable_tempdir() as workdir, temporary_database() as dsn:
        ca_path, cert_path, key_path = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        cert.private_key_pem.write_to_path(str(key_path))
        cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        cfg = write_config(
            workdir,
            **{
                'certfile = ""': f'certfile = "{cert_path}"',
                'keyfile = ""': f'keyfile = "{key_path}"',
            },
        )
        keys = workdir / "jwt.keys"
        keys.write_text(f"k1={old}\nk2={new}\n")
        env = {
            "TICKSTREAM_DATABASE_URL": dsn,
            "TICKSTREAM_JWT_KEYS_FILE": str(keys),
            "TICKSTREAM_CONFIG": str(cfg),
        }
        srv = start_server(workdir, env)
        try:
            _wait_https(srv, ca_path)
            status, headers = _https(srv.port, "/v1/accounts", ca_path, _signed(old, "k1"))
            assert status == 200
            assert headers["strict-transport-security"].startswith("max-age=31536000")
            assert _https(srv.port, "/v1/accounts", ca_path, _signed(new, "k2"))[0] == 200
            assert _https(srv.port, "/v1/accounts", ca_path, _signed(old, "k9"))[0] == 401
            publisher = _signed(new, "k2", "feed:publish")
            reply, refused = trio.run(_wss, srv.port, ca_path, publisher, _signed(old, "k9"))
            assert reply["op"] in {"ack", "error"} and reply["id"] == "t1"
            assert refused.status_code == 401
            assert (b"x-content-type-options", b"nosniff") in refused.headers
            assert not [v for k, v in refused.headers if k == b"server"]
            with pytest.raises(ssl.SSLError):
                _https(srv.port, "/health", _other_ca(workdir))
        finally:
            assert srv.stop(signal.SIGTERM) == 0
        assert old not in srv.output() and new not in srv.output()

        keys.write_text(f"k2={new}\n")  # k1 retired
        srv = start_server(workdir, env)
        try:
            _wait_https(srv, ca_path)
            assert _https(srv.port, "/v1/accounts", ca_path, _signed(old, "k1"))[0] == 401
            assert _https(srv.port, "/v1/accounts", ca_path, _signed(new, "k2"))[0] == 200
        finally:
            srv.stop(signal.SIGTERM)


async def _wss(port: int, ca: Path, good: str, bad: str) -> tuple[Any, ConnectionRejected]:
    # A frame over wss with a good token; the handshake refused with a bad one.
    url = f"wss://127.0.0.1:{port}/ws/v1/ingest"
    ctx = ssl.create_default_context(cafile=str(ca))
    with trio.fail_after(20):
        headers = [(b"authorization", f"Bearer {good}".encode())]
        async with open_websocket_url(url, ssl_context=ctx, extra_headers=headers) as ws:
            await ws.send_message(json.dumps({"op": "ticks", "id": "t1", "ticks": []}))
            reply = json.loads(await ws.get_message())
        try:
            headers = [(b"authorization", f"Bearer {bad}".encode())]
            async with open_websocket_url(url, ssl_context=ctx, extra_headers=headers):
                pass
        except ConnectionRejected as exc:
            return reply, exc
    raise AssertionError("a bad token opened a WebSocket")


def _other_ca(workdir: Path) -> Path:
    path = workdir / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def _wait_https(srv: ServerProcess, ca: Path, budget: float = 60.0) -> None:
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise AssertionError(f"server exited {srv.proc.returncode}:\n{srv.output()}")
        try:
            if _https(srv.port, "/health", ca)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no https answer in {budget}s:\n{srv.output()}")


def test_wildcard_cors_with_credentials_stops_start_up_with_exit_2() -> None:
    """cors_origins = ["*"] with credentials is a configuration error: exit 2 naming it."""
    with reachable_tempdir() as workdir:
        cfg = write_config(
            workdir,
            **{
                "cors_origins = []": 'cors_origins = ["*"]',
                "cors_allow_credentials = false": "cors_allow_credentials = true",
            },
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTREAM_")}
        result = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "engine.main", "serve"],
            env=clean | {"TICKSTREAM_CONFIG": str(cfg), "TICKSTREAM_JWT_SECRET": E2E_SECRET},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=workdir,
        )
    assert result.returncode == 2
    assert "cors_origins" in result.stderr and E2E_SECRET not in result.stderr
