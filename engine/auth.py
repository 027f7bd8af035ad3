"""JWT bearer tokens (HS256): issue and verify, with the claims of PROTOCOL.md.

``alg`` is pinned to HS256 (``none`` and every other algorithm are refused);
``sub``, ``exp``, ``iat``, ``iss`` and ``aud`` are required. ``scope`` is a
space-separated subset of ``read trade feed:publish admin``; ``accounts`` lists the
accounts the token may read (``read``) or trade (``trade``, which implies ``read``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import jwt

from protocol import ErrorCode, ProtocolError

ALGORITHM: Final = "HS256"
REQUIRED_CLAIMS: Final = ("sub", "exp", "iat", "iss", "aud")
MAX_TOKEN_BYTES: Final = 8192


class Scope(enum.StrEnum):
    """Permissions a token may carry."""

    READ = "read"
    TRADE = "trade"
    FEED_PUBLISH = "feed:publish"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for, and what it may do."""

    sub: str
    scopes: frozenset[Scope]
    accounts: frozenset[str]
    expires_at: int  # epoch seconds

    def has(self, scope: Scope) -> bool:
        """Return whether the token carries ``scope``.

        ``admin`` carries every scope, and ``trade`` implies ``read``.
        """
        if Scope.ADMIN in self.scopes or scope in self.scopes:
            return True
        return scope is Scope.READ and Scope.TRADE in self.scopes

    def can_read(self, account: str) -> bool:
        """Return whether the token may read ``account``."""
        if Scope.ADMIN in self.scopes:
            return True
        readable = Scope.READ in self.scopes or Scope.TRADE in self.scopes
        return readable and account in self.accounts

    def can_trade(self, account: str) -> bool:
        """Return whether the token may trade on ``account``."""
        if Scope.ADMIN in self.scopes:
            return True
        return Scope.TRADE in self.scopes and account in self.accounts


class AuthError(ProtocolError):
    """The credentials are missing or not valid (401); ``reason`` is for metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(ErrorCode.UNAUTHENTICATED, "invalid or missing credentials")
        self.reason = reason


def issue_token(
    secret: str,
    *,
    sub: str,
    scopes: Iterable[Scope | str],
    accounts: Iterable[str] = (),
    now: int,
    ttl: int,
    issuer: str,
    audience: str,
    kid: str | None = None,
) -> str:
    """Return a signed HS256 token.

    Args:
        secret: the signing key.
        sub: the subject (user or service).
        scopes: the scopes to grant.
        accounts: the accounts it may read or trade.
        now: issue time, epoch seconds.
        ttl: lifetime in seconds.
        issuer: ``iss``.
        audience: ``aud``.
        kid: optional key id for key rotation.
    """
    claims = {
        "sub": sub,
        "scope": " ".join(str(Scope(s)) for s in scopes),
        "accounts": sorted(set(accounts)),
        "iat": now,
        "exp": now + ttl,
        "iss": issuer,
        "aud": audience,
    }
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers=headers)


def verify_token(
    token: str, secret: str, *, issuer: str, audience: str, leeway: float, now: float
) -> Principal:
    """Verify ``token`` at time ``now`` (epoch seconds) and return its :class:`Principal`.

    ``exp`` and ``iat`` are checked against ``now`` (the engine's clock seam), not
    against the system clock, with ``leeway`` seconds of skew accepted.

    Raises:
        AuthError: bad signature, wrong ``alg``, expired, issued in the future,
            wrong ``iss``/``aud``, missing claims or malformed scope/accounts. The
            message never says which, so as not to help an attacker; ``reason``
            does, for metrics and security logs.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("too_long")
    try:
        claims: dict[str, object] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except (jwt.InvalidIssuerError, jwt.InvalidAudienceError):
        raise AuthError("wrong_issuer_or_audience") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad_signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("bad_algorithm") from None
    except jwt.PyJWTError:
        raise AuthError("malformed") from None
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise AuthError("malformed")
    if now > exp + leeway:
        raise AuthError("expired")
    if iat > now + leeway:
        raise AuthError("issued_in_future")
    return _principal(claims)


def _principal(claims: dict[str, object]) -> Principal:
    sub, scope, accounts, exp = (
        claims.get("sub"),
        claims.get("scope", ""),
        claims.get("accounts", []),
        claims.get("exp"),
    )
    if not isinstance(sub, str) or not sub or not isinstance(exp, int):
        raise AuthError("malformed")
    if not isinstance(scope, str) or not isinstance(accounts, list):
        raise AuthError("malformed")
    try:
        scopes = frozenset(Scope(s) for s in scope.split())
    except ValueError:
        raise AuthError("unknown_scope") from None
    if not all(isinstance(a, str) for a in accounts):
        raise AuthError("malformed")
    return Principal(sub, scopes, frozenset(accounts), exp)
