"""Authentication at the edge: bearer tokens on HTTP and WebSocket, scope checks.

Every failure is a security event: logged as a structured line (never with the
token) and counted by reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Final, ParamSpec, TypeVar
from typing import Protocol as _Protocol

from quart import g, request

from protocol import ErrorCode, ProtocolError

from ..auth import AuthError, Principal, Scope
from ..context import Engine

SECURITY_LOG = logging.getLogger("tickstream.security")
MS_PER_S: Final = 1000
BEARER: Final = "bearer "

P = ParamSpec("P")
R = TypeVar("R")


class _Headers(_Protocol):
    def get(self, key: str) -> str | None: ...


def bearer_token(headers: _Headers) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, '' if malformed, None if absent."""
    value = headers.get("Authorization")
    if value is None:
        return None
    if not value.lower().startswith(BEARER):
        return ""
    return value[len(BEARER) :].strip()


def authenticate(engine: Engine, token: str, *, remote: str | None = None) -> Principal:
    """Verify ``token`` against the engine's key and clock.

    Raises:
        AuthError: 401; the failure is logged and counted with its reason.
    """
    auth = engine.config.auth
    keys = auth.key_set()
    try:
        if keys is None or not token:
            raise AuthError("missing")
        return engine.tokens.verify(
            token,
            keys,
            issuer=auth.issuer,
            audience=auth.audience,
            leeway=auth.leeway,
            now=engine.clock() / MS_PER_S,
        )
    except AuthError as exc:
        engine.metrics.auth_failures.labels(exc.reason).inc()
        SECURITY_LOG.warning(
            "security event: authentication failed", extra={"reason": exc.reason, "remote": remote}
        )
        raise


def forbid(
    engine: Engine, principal: Principal, what: str, *, remote: str | None = None
) -> ProtocolError:
    """Log and count a refused authorisation; return the 403 error to raise or send."""
    engine.metrics.forbidden.labels(what.split(":")[0]).inc()
    SECURITY_LOG.warning(
        "security event: forbidden", extra={"sub": principal.sub, "what": what, "remote": remote}
    )
    return ProtocolError(ErrorCode.FORBIDDEN, "not allowed", {"what": what})


def require(
    engine: Engine, scope: Scope
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a route: 401 without a valid bearer token, 403 without ``scope``.

    The verified :class:`Principal` is left in ``quart.g.principal``.
    """

    def decorate(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token = bearer_token(request.headers)
            principal = authenticate(engine, token or "", remote=request.remote_addr)
            if not principal.has(scope):
                raise forbid(engine, principal, f"scope:{scope}", remote=request.remote_addr)
            g.principal = principal
            return await view(*args, **kwargs)

        return wrapper

    return decorate
