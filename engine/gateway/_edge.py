"""Boundary hardening at the ASGI level: security headers and CORS on every HTTP response.

Wrapping ``app.asgi_app`` rather than hooking ``after_request`` puts the headers on
every response the app sends — errors, 404s, 413s and 500s included — and answers CORS
preflights before routing.

- Security headers: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer``, ``Content-Security-Policy`` (``default-src 'none';
  frame-ancestors 'none'`` for the JSON API; the Swagger UI at ``/docs`` gets a policy
  that lets it load its script and style from the CDN quart-schema names), and
  ``Strict-Transport-Security`` only when the listener serves TLS. A WebSocket handshake
  refused with an HTTP answer (401, 403) gets them too.
- CORS: exact origins from ``server.cors_origins`` (``"*"`` only without credentials,
  which the config refuses). An allowed origin gets ``Access-Control-Allow-Origin``
  (and ``-Credentials`` when configured); any other origin gets no CORS header at all.
  A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final
from urllib.parse import urlsplit

from quart_trio import QuartTrio

from ..config import ServerConfig
from ..context import Engine
from ._token import token_blueprint

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
CORS_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CORS_HEADERS: Final = ("authorization", "content-type", "idempotency-key", "x-request-id")
CORS_EXPOSE: Final = "X-Request-Id, Retry-After"


def docs_csp(asset_urls: Iterable[str]) -> str:
    """Return the CSP of the Swagger UI page: its CDN's script and style, nothing else."""
    origins = sorted({f"{p.scheme}://{p.netloc}" for p in map(urlsplit, asset_urls) if p.netloc})
    cdn = " ".join(origins)
    return (
        f"default-src 'none'; script-src {cdn} 'unsafe-inline'; "
        f"style-src {cdn} 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'"
    )


class EdgeHeaders:
    """ASGI middleware adding security and CORS headers (see the module docstring)."""

    def __init__(self, app: ASGIApp, server: ServerConfig, *, docs: dict[str, str]) -> None:
        """Wrap ``app``.

        Args:
            app: the ASGI app to wrap.
            server: the listener settings (CORS allowlist, TLS, HSTS).
            docs: path → CSP for HTML pages that need a policy of their own.
        """
        self._app = app
        self._docs = docs
        self._origins = frozenset(server.cors_origins)
        self._any = "*" in self._origins
        self._credentials = server.cors_allow_credentials
        self._max_age = str(server.cors_max_age).encode()
        common: Headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if server.tls and server.hsts_max_age > 0:
            hsts = f"max-age={server.hsts_max_age}; includeSubDomains"
            common.append((b"strict-transport-security", hsts.encode()))
        self._common = common

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._app(scope, receive, self._with_headers(send, self._security("")))
            return
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_headers = {k.lower(): v for k, v in scope.get("headers", [])}
        origin = request_headers.get(b"origin")
        extra = self._security(scope["path"])
        if (
            scope["method"] == "OPTIONS"
            and origin
            and b"access-control-request-method" in (request_headers)
        ):
            await self._preflight(origin, request_headers, extra, send)
            return
        extra += self._cors(origin)
        await self._app(scope, receive, self._with_headers(send, extra))

    @staticmethod
    def _with_headers(send: Send, extra: Headers) -> Send:
        # Adds ``extra`` (replacing same-named headers) to the response start: an HTTP
        # answer, or the HTTP answer refusing a WebSocket handshake.
        names = {name for name, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        return send_with_headers

    def _security(self, path: str) -> Headers:
        csp = self._docs.get(path, API_CSP)
        return [*self._common, (b"content-security-policy", csp.encode())]

    def _allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self._any or origin.decode("latin-1") in self._origins)

    def _cors(self, origin: bytes | None) -> Headers:
        if not self._origins:
            return []
        headers: Headers = [] if self._any else [(b"vary", b"Origin")]
        if not self._allowed(origin):
            return headers
        assert origin is not None  # noqa: S101 - _allowed checked it
        headers.append((b"access-control-allow-origin", b"*" if self._any else origin))
        if self._credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        headers.append((b"access-control-expose-headers", CORS_EXPOSE.encode()))
        return headers

    async def _preflight(
        self, origin: bytes, request_headers: dict[bytes, bytes], extra: Headers, send: Send
    ) -> None:
        headers = extra + [(b"content-length", b"0")]
        method = request_headers.get(b"access-control-request-method", b"").decode("latin-1")
        asked = request_headers.get(b"access-control-request-headers", b"").decode("latin-1")
        wanted = {h.strip().lower() for h in asked.split(",") if h.strip()}
        cors = self._cors(origin)
        if method.upper() in CORS_METHODS and wanted <= set(CORS_HEADERS):
            headers += cors
            if self._allowed(origin):
                headers += [
                    (b"access-control-allow-methods", ", ".join(CORS_METHODS).encode()),
                    (b"access-control-allow-headers", ", ".join(CORS_HEADERS).encode()),
                    (b"access-control-max-age", self._max_age),
                ]
        else:
            headers += [h for h in cors if h[0] == b"vary"]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def register_edge(app: QuartTrio, server: ServerConfig, *, docs_path: str | None) -> None:
    """Wrap ``app`` with :class:`EdgeHeaders` (call once, after QuartSchema is set up)."""
    docs = {}
    if docs_path is not None:
        assets = (
            str(app.config.get("QUART_SCHEMA_SWAGGER_JS_URL", "")),
            str(app.config.get("QUART_SCHEMA_SWAGGER_CSS_URL", "")),
        )
        docs[docs_path] = docs_csp(assets)
    app.asgi_app = EdgeHeaders(app.asgi_app, server, docs=docs)  # type: ignore[method-assign, arg-type, assignment]


def register_security(app: QuartTrio, engine: Engine, *, docs_path: str | None) -> None:
    """Add ``POST /v1/auth/token`` and the edge headers (CORS, security) to ``app``."""
    app.register_blueprint(token_blueprint(engine))
    register_edge(app, engine.config.server, docs_path=docs_path)
