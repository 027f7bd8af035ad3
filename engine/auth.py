"""JWT bearer tokens (HS256): issue and verify, with the claims of PROTOCOL.md.

``alg`` is pinned to HS256 (``none`` and every other algorithm are refused);
``sub``, ``exp``, ``iat``, ``iss`` and ``aud`` are required. ``scope`` is a
space-separated subset of ``read trade feed:publish admin``; ``accounts`` lists the
accounts the token may read (``read``) or trade (``trade``, which implies ``read``).
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import jwt

from protocol import ErrorCode, ProtocolError

ALGORITHM: Final = "HS256"
REQUIRED_CLAIMS: Final = ("sub", "exp", "iat", "iss", "aud")
MAX_TOKEN_BYTES: Final = 8192
MIN_KEY_BYTES: Final = 32
_KID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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
    principal, iat = _verify(token, secret, issuer=issuer, audience=audience)
    check_times(principal.expires_at, iat, now=now, leeway=leeway)
    return principal


def check_times(exp: int, iat: int, *, now: float, leeway: float) -> None:
    """Check a verified token's ``exp`` and ``iat`` against ``now`` (epoch seconds).

    Raises:
        AuthError: ``expired`` or ``issued_in_future`` (past ``leeway`` seconds of skew).
    """
    if now > exp + leeway:
        raise AuthError("expired")
    if iat > now + leeway:
        raise AuthError("issued_in_future")


def _verify(token: str, secret: str, *, issuer: str, audience: str) -> tuple[Principal, int]:
    # Signature, algorithm and the time-independent claims; returns the principal and iat.
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
    iat = claims.get("iat")
    if not isinstance(claims.get("exp"), int) or not isinstance(iat, int):
        raise AuthError("malformed")
    return _principal(claims), iat


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


@dataclass(frozen=True, slots=True)
class KeySet:
    """The HS256 keys a node verifies with, by ``kid``; it signs with the newest.

    ``keys`` keeps the order of the keys file (oldest first, newest last). ``default``
    is the single-key form (``TICKSTREAM_JWT_SECRET``): it verifies tokens without a
    ``kid`` header, and signs when there is no key set. A token whose ``kid`` is not in
    ``keys`` is refused (``unknown_kid``), whatever its signature.
    """

    keys: Mapping[str, str]
    default: str | None = None

    def __post_init__(self) -> None:
        if not self.keys and self.default is None:
            raise ValueError("a key set needs at least one key")

    @property
    def signing(self) -> tuple[str | None, str]:
        """Return ``(kid, secret)`` of the newest key (kid None: the single key)."""
        if self.keys:
            kid = list(self.keys)[-1]
            return kid, self.keys[kid]
        assert self.default is not None  # noqa: S101 - checked in __post_init__
        return None, self.default

    def secret_for(self, token: str) -> str:
        """Return the secret that must have signed ``token``, chosen by its ``kid``.

        Raises:
            AuthError: the header is malformed, or names a ``kid`` not in the set, or
                there is none and no single key.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed") from None
        kid = header.get("kid")
        if kid is None:
            if self.default is None:
                raise AuthError("unknown_kid")
            return self.default
        if not isinstance(kid, str) or kid not in self.keys:
            raise AuthError("unknown_kid")
        return self.keys[kid]


def parse_key_lines(text: str) -> dict[str, str]:
    """Parse ``kid=secret`` lines (``#`` comments and blank lines skipped), oldest first.

    Raises:
        ValueError: a malformed line, a bad or repeated ``kid``, or a secret shorter
            than ``MIN_KEY_BYTES``; the message names the line, never the secret.
    """
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kid, sep, secret = line.partition("=")
        kid, secret = kid.strip(), secret.strip()
        if not sep or not _KID_RE.match(kid):
            raise ValueError(f"line {number}: expected kid=secret with kid [A-Za-z0-9._-]")
        if kid in keys:
            raise ValueError(f"line {number}: kid {kid!r} appears twice")
        if len(secret.encode()) < MIN_KEY_BYTES:
            raise ValueError(f"line {number}: the key of {kid!r} is shorter than 32 bytes")
        keys[kid] = secret
    if not keys:
        raise ValueError("no kid=secret line")
    return keys


def verify_with_keys(
    token: str, keys: KeySet, *, issuer: str, audience: str, leeway: float, now: float
) -> Principal:
    """Verify ``token`` with the key its ``kid`` names (see :func:`verify_token`).

    Raises:
        AuthError: as :func:`verify_token`, or ``unknown_kid``.
    """
    principal, iat = _verify_by_kid(token, keys, issuer=issuer, audience=audience)
    check_times(principal.expires_at, iat, now=now, leeway=leeway)
    return principal


def _verify_by_kid(
    token: str, keys: KeySet, *, issuer: str, audience: str
) -> tuple[Principal, int]:
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("too_long")
    return _verify(token, keys.secret_for(token), issuer=issuer, audience=audience)


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    iat: int
    keys: KeySet
    issuer: str
    audience: str


class VerifiedTokens:
    """The tokens whose signature and claims were verified recently (bounded, LRU).

    A client sends the same bearer token with every request; the HMAC, the base64 and
    JSON decoding and the claim checks of it are done once. What a hit still checks on
    every use: ``exp`` and ``iat`` against ``now``, and that the keys, issuer and
    audience are the ones it was verified with — so a key taken out of the key set stops
    its tokens at once. Failures are never kept (each one is logged and counted).
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, _Verified] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def verify(
        self, token: str, keys: KeySet, *, issuer: str, audience: str, leeway: float, now: float
    ) -> Principal:
        """Verify ``token`` as :func:`verify_with_keys` does, from memory when it can.

        Raises:
            AuthError: as :func:`verify_with_keys`.
        """
        entry = self._entries.get(token)
        if (
            entry is not None
            and entry.keys == keys
            and entry.issuer == issuer
            and entry.audience == audience
        ):
            try:
                check_times(entry.principal.expires_at, entry.iat, now=now, leeway=leeway)
            except AuthError:
                del self._entries[token]
                raise
            self._entries.move_to_end(token)
            self.hits += 1
            return entry.principal
        principal, iat = _verify_by_kid(token, keys, issuer=issuer, audience=audience)
        check_times(principal.expires_at, iat, now=now, leeway=leeway)
        self._entries[token] = _Verified(principal, iat, keys, issuer, audience)
        self._entries.move_to_end(token)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return principal
