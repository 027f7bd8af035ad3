"""``POST /v1/auth/token``: exchange an API key for a short-lived JWT.

The key's id finds its row; the hash is compared in constant time; a revoked key is
refused at once. Failed attempts are counted per client address: ``auth.lockout_failures``
of them within ``auth.lockout_window`` s lock the address out for ``auth.lockout_duration``
s (429 with ``Retry-After``; per node, in memory). Every failure is a security event
(logged with the key's non-secret prefix, never the key) and counted by reason.
"""

from __future__ import annotations

import logging

import trio
from pydantic import BaseModel, Field
from quart import Blueprint, Response, request
from quart_schema import document_response, validate_request

from .. import apikeys
from ..auth import AuthError, issue_token
from ..context import Engine
from ..ratelimit import LockoutTracker, RateLimited
from ._responses import json_response

SECURITY_LOG = logging.getLogger("tickstream.security")
MS_PER_S = 1000


class TokenIn(BaseModel):
    """An API key to exchange."""

    api_key: str = Field(min_length=1, max_length=apikeys.MAX_KEY_CHARS)


class TokenOut(BaseModel):
    """A bearer token with the key's subject, scopes and accounts."""

    access_token: str
    token_type: str
    expires_in: int


def token_blueprint(engine: Engine) -> Blueprint:
    """Return the blueprint of ``POST /v1/auth/token`` (it owns the lockout records)."""
    bp = Blueprint("token", __name__)
    auth = engine.config.auth
    lockout = LockoutTracker(
        trio.current_time,
        max_failures=auth.lockout_failures,
        window=auth.lockout_window,
        lockout=auth.lockout_duration,
    )
    engine.metrics.watch(
        lambda: [
            (
                "tickstream_auth_lockouts",
                "Client addresses locked out of the API key exchange since start",
                lockout.statistics().lockouts,
            )
        ]
    )

    def refuse(reason: str, remote: str, prefix: str | None) -> AuthError | RateLimited:
        engine.metrics.auth_failures.labels(reason).inc()
        SECURITY_LOG.warning(
            "security event: api key exchange failed",
            extra={"reason": reason, "remote": remote, "key": prefix},
        )
        locked_for = lockout.record_failure(remote)
        if locked_for > 0:
            return locked(remote, locked_for)
        return AuthError(reason)

    def locked(remote: str, wait: float) -> RateLimited:
        engine.metrics.rate_limited.labels("auth_lockout").inc()
        SECURITY_LOG.warning(
            "security event: address locked out of api key exchange",
            extra={"remote": remote, "retry_after": round(wait, 1)},
        )
        return RateLimited(wait)

    @bp.post("/v1/auth/token")
    @validate_request(TokenIn)
    @document_response(TokenOut)
    async def exchange(data: TokenIn) -> Response:
        """Exchange an API key for a short-lived bearer JWT (no token needed)."""
        remote = request.remote_addr or "unknown"
        wait = lockout.locked_for(remote)
        if wait > 0:
            raise locked(remote, wait)
        key_id = apikeys.key_id_of(data.api_key)
        if key_id is None:
            apikeys.matches(data.api_key, None)  # the same work as a real comparison
            raise refuse("malformed_key", remote, None)
        found = await apikeys.lookup(engine.store, key_id)
        key, stored = found if found is not None else (None, None)
        prefix = apikeys.display_prefix(key_id)
        if not apikeys.matches(data.api_key, stored) or key is None:
            raise refuse("unknown_key", remote, prefix)
        if key.revoked:
            raise refuse("revoked_key", remote, prefix)
        keys = auth.key_set()
        if keys is None:
            raise AuthError("no_signing_key")
        lockout.record_success(remote)
        kid, secret = keys.signing
        token = issue_token(
            secret,
            sub=key.sub,
            scopes=key.scopes,
            accounts=key.accounts,
            now=engine.clock() // MS_PER_S,
            ttl=auth.token_ttl,
            issuer=auth.issuer,
            audience=auth.audience,
            kid=kid,
        )
        SECURITY_LOG.info(
            "api key exchanged for a token",
            extra={"sub": key.sub, "key": prefix, "remote": remote},
        )
        body = {"access_token": token, "token_type": "bearer", "expires_in": auth.token_ttl}
        return json_response(body, headers={"Cache-Control": "no-store"})

    return bp
