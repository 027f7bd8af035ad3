"""JWT issue/verify: every way a token can be wrong, and scope/account rules."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from engine.auth import AuthError, Principal, Scope, issue_token, verify_token

KEY = "k" * 40
NOW = 1_800_000_000


def _token(**overrides: object) -> str:
    args: dict[str, object] = {
        "sub": "alice",
        "scopes": ["read", "trade"],
        "accounts": ["ACC1"],
        "now": NOW,
        "ttl": 600,
        "issuer": "tickstream",
        "audience": "tickstream",
    }
    args.update(overrides)
    secret = str(args.pop("secret", KEY))
    return issue_token(secret, **args)  # type: ignore[arg-type]


def _verify(token: str, now: float = NOW + 1, **kw: object) -> Principal:
    opts: dict[str, object] = {"issuer": "tickstream", "audience": "tickstream", "leeway": 5.0}
    opts.update(kw)
    return verify_token(token, KEY, now=now, **opts)  # type: ignore[arg-type]


def test_valid_token_yields_principal() -> None:
    """A well-formed token gives its subject, scopes and accounts."""
    p = _verify(_token())
    assert p.sub == "alice" and p.accounts == frozenset({"ACC1"})
    assert p.scopes == frozenset({Scope.READ, Scope.TRADE}) and p.expires_at == NOW + 600


@pytest.mark.parametrize(
    ("token_kw", "verify_kw", "reason"),
    [
        ({}, {"now": NOW + 606}, "expired"),
        ({"issuer": "other"}, {}, "wrong_issuer_or_audience"),
        ({"audience": "other"}, {}, "wrong_issuer_or_audience"),
        ({"secret": "z" * 40}, {}, "bad_signature"),
        ({"now": NOW + 100}, {}, "issued_in_future"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    token_kw: dict[str, object], verify_kw: dict[str, object], reason: str
) -> None:
    """Expired, wrong iss/aud, forged or future tokens are 401 with a metric reason."""
    with pytest.raises(AuthError) as info:
        _verify(_token(**token_kw), **verify_kw)
    assert info.value.reason == reason
    assert info.value.http_status == 401
    assert info.value.message == "invalid or missing credentials"


def test_leeway_accepts_small_clock_skew() -> None:
    """A token expired by less than the leeway still passes."""
    assert _verify(_token(), now=NOW + 603).sub == "alice"


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) never authenticates."""
    claims = {"sub": "x", "exp": NOW + 60, "iat": NOW, "iss": "tickstream", "aud": "tickstream"}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(AuthError) as info:
        _verify(token)
    assert info.value.reason == "bad_algorithm"


def test_other_hmac_algorithm_is_refused() -> None:
    """alg is pinned to HS256; HS512 with the right key is refused too."""
    claims = {"sub": "x", "exp": NOW + 60, "iat": NOW, "iss": "tickstream", "aud": "tickstream"}
    with pytest.raises(AuthError):
        _verify(jwt.encode(claims, KEY, algorithm="HS512"))


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "iss", "aud"])
def test_missing_required_claim_is_refused(missing: str) -> None:
    """Every claim of PROTOCOL.md is required."""
    claims = {"sub": "x", "exp": NOW + 60, "iat": NOW, "iss": "tickstream", "aud": "tickstream"}
    del claims[missing]
    with pytest.raises(AuthError):
        _verify(jwt.encode(claims, KEY, algorithm="HS256"))


@pytest.mark.parametrize(
    "extra", [{"scope": "read superuser"}, {"scope": 5}, {"accounts": "ACC1"}, {"accounts": [1]}]
)
def test_malformed_scope_or_accounts_are_refused(extra: dict[str, object]) -> None:
    """Unknown scopes and wrongly typed claims do not authenticate."""
    claims = {"sub": "x", "exp": NOW + 60, "iat": NOW, "iss": "tickstream", "aud": "tickstream"}
    claims.update(extra)
    with pytest.raises(AuthError):
        _verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_garbage_and_oversized_tokens_are_refused() -> None:
    """Non-JWT strings and huge tokens are 401, never an exception escaping."""
    for token in ("garbage", "a.b.c", "x" * 10_000, ""):
        with pytest.raises(AuthError):
            _verify(token)


def test_tampered_payload_fails_signature() -> None:
    """Changing the payload (e.g. adding admin) breaks the signature."""
    head, payload, sig = _token().split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=="))
    data["scope"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError) as info:
        _verify(f"{head}.{forged}.{sig}")
    assert info.value.reason == "bad_signature"


def test_account_rules() -> None:
    """read reads listed accounts, trade implies read, admin may do everything."""
    reader = Principal("r", frozenset({Scope.READ}), frozenset({"A"}), NOW)
    trader = Principal("t", frozenset({Scope.TRADE}), frozenset({"A"}), NOW)
    admin = Principal("a", frozenset({Scope.ADMIN}), frozenset(), NOW)
    assert reader.can_read("A") and not reader.can_read("B") and not reader.can_trade("A")
    assert trader.can_read("A") and trader.can_trade("A") and not trader.can_trade("B")
    assert admin.can_read("B") and admin.can_trade("B") and admin.has(Scope.FEED_PUBLISH)
    assert not reader.has(Scope.ADMIN) and reader.has(Scope.READ)
