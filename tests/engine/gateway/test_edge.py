"""The edge in-process: API key exchange and lockout, security headers, CORS, body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import jwt
import pytest
import trio
import trio_asyncio
from quart import g
from quart_trio import QuartTrio

from engine import apikeys
from engine.auth import Scope
from engine.bus import InProcessBus
from engine.config import Config, Secret, with_overrides
from engine.context import Engine
from engine.gateway import create_app
from engine.gateway._auth import require
from engine.metrics import Metrics
from engine.store import Store

pytestmark = pytest.mark.integration

NOW_MS = 1_800_000_000_000
ORIGIN = "https://app.example.com"
KEYS = "k1=" + "1" * 40 + "\nk2=" + "2" * 40
AppFactory = Callable[..., QuartTrio]


@pytest.fixture
async def store(
    aio_loop: trio_asyncio.TrioEventLoop, migrated_dsn: str, config: Config
) -> AsyncIterator[Store]:
    """An open store on the session's migrated database."""
    st = Store(config.database, migrated_dsn)
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        yield st
        nursery.cancel_scope.cancel()


@pytest.fixture
def make_app(store: Store, config: Config) -> AppFactory:
    """Build an app with some config sections overridden, plus a route needing ``read``."""

    def make(**sections: dict[str, object]) -> QuartTrio:
        server = {"max_body_bytes": 4096, **sections.pop("server", {})}
        cfg = with_overrides(config, server=server, **sections)
        engine = Engine(
            config=cfg, store=store, bus=InProcessBus(), metrics=Metrics(), clock=lambda: NOW_MS
        )
        app = create_app(engine)

        @app.get("/_test/whoami")
        @require(engine, Scope.READ)
        async def whoami() -> dict[str, object]:
            return {"sub": g.principal.sub, "accounts": sorted(g.principal.accounts)}

        @app.post("/_test/echo")
        async def echo() -> dict[str, object]:
            from quart import request

            return {"len": len(await request.get_data())}

        app.extensions["test.engine"] = engine
        return app

    return make


async def _key(store: Store, *scopes: Scope, accounts: tuple[str, ...] = ("ACC1",)) -> str:
    _, key = await apikeys.create(store, sub="alice", scopes=scopes, accounts=accounts, now_ms=1)
    return key


async def _exchange(app: QuartTrio, key: str, client: str = "10.0.0.1") -> tuple[int, dict]:  # type: ignore[type-arg]
    resp = await app.test_client().post(
        "/v1/auth/token", json={"api_key": key}, scope_base={"client": (client, 4000)}
    )
    return resp.status_code, {**(await resp.get_json()), "_headers": resp.headers}


async def test_key_exchange_gives_a_short_token_with_the_keys_grants(
    make_app: AppFactory, store: Store
) -> None:
    """A key becomes a bearer JWT with its sub, scopes, accounts and auth.token_ttl."""
    app = make_app(auth={"token_ttl": 120})
    key = await _key(store, Scope.READ, Scope.TRADE)
    status, body = await _exchange(app, key)
    assert status == 200
    assert body["token_type"] == "bearer" and body["expires_in"] == 120
    assert body["_headers"]["Cache-Control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["scope"] == "read trade"
    assert claims["accounts"] == ["ACC1"] and claims["exp"] - claims["iat"] == 120
    resp = await app.test_client().get(
        "/_test/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert resp.status_code == 200 and await resp.get_json() == {
        "sub": "alice",
        "accounts": ["ACC1"],
    }


async def test_revoked_and_unknown_keys_are_401_at_once(make_app: AppFactory, store: Store) -> None:
    """A revoked key is refused on the next exchange; a forged or unknown one too."""
    app = make_app()
    key = await _key(store, Scope.READ)
    assert (await _exchange(app, key))[0] == 200
    key_id = apikeys.key_id_of(key)
    assert key_id is not None
    revoked = await apikeys.revoke(store, key_id, NOW_MS)
    assert revoked is not None and revoked.revoked
    status, body = await _exchange(app, key)
    assert status == 401 and body["error"]["code"] == "unauthenticated"
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    _, other = apikeys.new_key()
    for bad in (forged, other, "not-a-key"):
        assert (await _exchange(app, bad, client="10.0.0.9"))[0] == 401
    text = app.extensions["test.engine"].metrics.render().decode()
    for reason in ("revoked_key", "unknown_key", "malformed_key"):
        assert f'tickstream_auth_failures_total{{reason="{reason}"}}' in text


async def test_repeated_failures_lock_the_address_out_not_the_others(
    make_app: AppFactory, store: Store
) -> None:
    """N failures from one address → 429 + Retry-After, even with a good key; others go on."""
    app = make_app(auth={"lockout_failures": 3, "lockout_window": 60.0, "lockout_duration": 120.0})
    good = await _key(store, Scope.READ)
    _, unknown = apikeys.new_key()
    statuses = [(await _exchange(app, unknown, "10.0.0.66"))[0] for _ in range(3)]
    assert statuses == [401, 401, 429]
    status, body = await _exchange(app, good, "10.0.0.66")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert 100 <= int(body["_headers"]["Retry-After"]) <= 120
    assert (await _exchange(app, good, "10.0.0.67"))[0] == 200
    text = app.extensions["test.engine"].metrics.render().decode()
    assert 'tickstream_rate_limited_total{limit="auth_lockout"} 2.0' in text
    assert "tickstream_auth_lockouts 1.0" in text


async def test_tokens_are_signed_with_the_newest_kid(make_app: AppFactory, store: Store) -> None:
    """With a key set, the exchanged token carries the newest kid and verifies."""
    app = make_app(auth={"jwt_keys": Secret(KEYS), "jwt_secret": None})
    status, body = await _exchange(app, await _key(store, Scope.READ))
    assert status == 200
    assert jwt.get_unverified_header(body["access_token"])["kid"] == "k2"
    resp = await app.test_client().get(
        "/_test/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert resp.status_code == 200


async def test_bad_exchange_bodies_are_422(make_app: AppFactory) -> None:
    """A missing or oversized api_key is a validation error, with security headers."""
    client = make_app().test_client()
    for payload in ({}, {"api_key": "x" * 500}, {"api_key": 5}):
        resp = await client.post("/v1/auth/token", json=payload)
        assert resp.status_code == 422
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/health", 200), ("GET", "/nope", 404), ("POST", "/v1/auth/token", 422)],
)
async def test_security_headers_on_every_response(
    make_app: AppFactory, method: str, path: str, status: int
) -> None:
    """200, 404 and 422 answers all carry the security headers; no HSTS without TLS."""
    resp = await make_app().test_client().open(path, method=method, json={})
    assert resp.status_code == status
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "Strict-Transport-Security" not in resp.headers
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_docs_get_a_csp_that_lets_swagger_load(make_app: AppFactory) -> None:
    """/docs loads Swagger UI from its CDN: its CSP allows that and still forbids framing."""
    resp = await make_app().test_client().get("/docs")
    csp = resp.headers["Content-Security-Policy"]
    assert resp.status_code == 200
    assert "script-src https://cdnjs.cloudflare.com" in csp and "frame-ancestors 'none'" in csp


async def test_hsts_only_with_tls(make_app: AppFactory) -> None:
    """With a TLS listener configured, responses carry Strict-Transport-Security."""
    app = make_app(server={"certfile": "/c.pem", "keyfile": "/k.pem", "hsts_max_age": 600})
    resp = await app.test_client().get("/health")
    assert resp.headers["Strict-Transport-Security"] == "max-age=600; includeSubDomains"


async def test_cors_allows_only_listed_origins(make_app: AppFactory) -> None:
    """An allowed origin is echoed (with credentials if set); any other gets no CORS header."""
    app = make_app(server={"cors_origins": [ORIGIN], "cors_allow_credentials": True})
    client = app.test_client()
    ok = await client.get("/health", headers={"Origin": ORIGIN})
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    assert ok.headers["Vary"] == "Origin"
    evil = await client.get("/nope", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 404
    assert not any(h.lower().startswith("access-control-") for h, _ in evil.headers.items())


async def test_cors_preflight(make_app: AppFactory) -> None:
    """A preflight from an allowed origin is 204 with methods and headers; others get none."""
    client = make_app(server={"cors_origins": [ORIGIN]}).test_client()
    asked = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }
    ok = await client.options("/v1/auth/token", headers={"Origin": ORIGIN, **asked})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert ok.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in ok.headers
    assert ok.headers["X-Frame-Options"] == "DENY"
    evil = await client.options(
        "/v1/auth/token", headers={"Origin": "https://evil.example", **asked}
    )
    assert evil.status_code == 204 and "Access-Control-Allow-Origin" not in evil.headers
    odd = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    odd["Access-Control-Request-Headers"] = "X-Custom"
    refused = await client.options("/v1/auth/token", headers=odd)
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_wildcard_origin_without_credentials(make_app: AppFactory) -> None:
    """cors_origins = ["*"] answers * and never allows credentials."""
    client = make_app(server={"cors_origins": ["*"]}).test_client()
    resp = await client.get("/health", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_413_carries_the_envelope_and_headers(make_app: AppFactory) -> None:
    """A body over server.max_body_bytes is 413 body_too_large, with security headers."""
    resp = await make_app().test_client().post("/_test/echo", data=b"x" * 5000)
    assert resp.status_code == 413
    assert (await resp.get_json())["error"]["code"] == "body_too_large"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_token_route_is_in_the_openapi_document(make_app: AppFactory) -> None:
    """/openapi.json documents POST /v1/auth/token."""
    spec = await (await make_app().test_client().get("/openapi.json")).get_json()
    assert "post" in spec["paths"]["/v1/auth/token"]
