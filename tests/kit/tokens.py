"""Tokens for tests, signed with the key the test server was given."""

from __future__ import annotations

import time
from collections.abc import Iterable

from engine.auth import issue_token

E2E_SECRET = "e2e-secret-" + "k" * 40


def token(
    *scopes: str,
    accounts: Iterable[str] = (),
    ttl: int = 600,
    secret: str = E2E_SECRET,
    sub: str = "tester",
    issuer: str = "tickstream",
    audience: str = "tickstream",
    now: int | None = None,
) -> str:
    """Return a signed HS256 token with the given scopes."""
    return issue_token(
        secret,
        sub=sub,
        scopes=scopes,
        accounts=accounts,
        now=int(time.time()) if now is None else now,
        ttl=ttl,
        issuer=issuer,
        audience=audience,
    )
