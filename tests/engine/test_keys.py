"""JWT key rotation by kid, API key format and hashing, security config validation."""

from __future__ import annotations

import uuid
from pathlib import Path

import jwt
import pytest
import redis.asyncio as aioredis

from engine import apikeys
from engine.auth import (
    AuthError,
    KeySet,
    Scope,
    VerifiedTokens,
    issue_token,
    parse_key_lines,
    verify_with_keys,
)
from engine.config import ConfigError, load_config

OLD, NEW, SINGLE = "o" * 40, "n" * 40, "s" * 40
NOW = 1_800_000_000


def _token(secret: str, kid: str | None, sub: str = "alice") -> str:
    return issue_token(
        secret,
        sub=sub,
        scopes=["read"],
        now=NOW,
        ttl=600,
        issuer="tickstream",
        audience="tickstream",
        kid=kid,
    )


def _verify(token: str, keys: KeySet) -> str:
    p = verify_with_keys(token, keys, issuer="tickstream", audience="tickstream", leeway=0, now=NOW)
    return p.sub


def test_key_set_signs_with_the_newest_and_verifies_by_kid() -> None:
    """The last key of the file signs; a token of the older key still verifies."""
    keys = KeySet(parse_key_lines(f"# rotated 2026-11\nk1={OLD}\n\nk2={NEW}\n"))
    assert keys.signing == ("k2", NEW)
    assert _verify(_token(OLD, "k1"), keys) == "alice"
    assert _verify(_token(NEW, "k2"), keys) == "alice"


@pytest.mark.parametrize(
    ("token_secret", "kid", "reason"),
    [
        (OLD, "k0", "unknown_kid"),  # retired: no longer in the set
        (NEW, "k1", "bad_signature"),  # signed by another key than its kid names
        (OLD, None, "unknown_kid"),  # no kid and no single key
    ],
)
def test_unknown_kid_or_wrong_key_is_refused(
    token_secret: str, kid: str | None, reason: str
) -> None:
    """A kid outside the set, a kid/key mismatch, or no kid without a single key: 401."""
    keys = KeySet(parse_key_lines(f"k1={OLD}\nk2={NEW}\n"))
    with pytest.raises(AuthError) as info:
        _verify(_token(token_secret, kid), keys)
    assert info.value.reason == reason


def test_single_key_verifies_tokens_without_kid_beside_the_set() -> None:
    """TICKSTREAM_JWT_SECRET keeps verifying kid-less tokens while a key set signs."""
    keys = KeySet({"k2": NEW}, default=SINGLE)
    assert _verify(_token(SINGLE, None), keys) == "alice"
    assert keys.signing == ("k2", NEW)
    assert KeySet({}, default=SINGLE).signing == (None, SINGLE)


def test_alg_stays_pinned_with_a_key_set() -> None:
    """An HS512 token with a known kid is still refused."""
    forged = jwt.encode(
        {"sub": "x", "iat": NOW, "exp": NOW + 60, "iss": "tickstream", "aud": "tickstream"},
        OLD * 2,
        algorithm="HS512",
        headers={"kid": "k1"},
    )
    with pytest.raises(AuthError):
        _verify(forged, KeySet({"k1": OLD * 2}))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("k1", "line 1"),
        (f"bad kid={OLD}", "line 1"),
        (f"k1={OLD}\nk1={NEW}", "twice"),
        ("k1=short", "shorter"),
        ("# only a comment\n", "no kid"),
    ],
)
def test_malformed_key_files_are_refused_without_showing_secrets(text: str, needle: str) -> None:
    """Each malformed keys file names the problem; the message never holds a secret."""
    with pytest.raises(ValueError, match=needle) as info:
        parse_key_lines(text)
    assert OLD not in str(info.value) and NEW not in str(info.value)


def test_keys_file_variable_is_loaded_and_validated(tmp_path: Path) -> None:
    """TICKSTREAM_JWT_KEYS_FILE is read; a bad file is a ConfigError naming the variable."""
    good = tmp_path / "keys"
    good.write_text(f"k1={OLD}\nk2={NEW}\n")
    cfg = load_config(env={"TICKSTREAM_JWT_KEYS_FILE": str(good)})
    keys = cfg.auth.key_set()
    assert keys is not None and keys.signing == ("k2", NEW)
    assert NEW not in repr(cfg)
    bad = tmp_path / "bad"
    bad.write_text("k1=short\n")
    with pytest.raises(ConfigError, match="TICKSTREAM_JWT_KEYS") as info:
        load_config(env={"TICKSTREAM_JWT_KEYS_FILE": str(bad)})
    assert "short\n" not in str(info.value)
    assert load_config(env={}).auth.key_set() is None


def test_keys_may_not_come_from_the_toml_file(tmp_path: Path) -> None:
    """auth.jwt_keys is a secret: refused in the file."""
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\njwt_keys = "k1={OLD}"\n')
    with pytest.raises(ConfigError, match="auth.jwt_keys is a secret"):
        load_config(path, env={})


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[server]\ncors_origins = ["*"]\ncors_allow_credentials = true\n', "'\\*' may not"),
        ('[server]\ncors_origins = ["https://a.example/path"]\n', "not an origin"),
        ('[server]\ncertfile = "/c.pem"\n', "set both"),
        ('[database]\nsslmode = "sometimes"\n', "database.sslmode"),
    ],
)
def test_unsafe_security_settings_are_refused(tmp_path: Path, toml: str, needle: str) -> None:
    """A wildcard with credentials, a non-origin, half a TLS pair, a bad sslmode: refused."""
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=needle):
        load_config(path, env={})


def test_sslmode_and_redis_ca_reach_the_urls(tmp_path: Path) -> None:
    """database.sslmode and redis.ssl_ca_certs are folded into the DSN and the Redis URL."""
    path = tmp_path / "c.toml"
    path.write_text('[database]\nsslmode = "verify-full"\n[redis]\nssl_ca_certs = "/ca.pem"\n')
    env = {
        "TICKSTREAM_DATABASE_URL": "postgresql://u:pw@db:5432/t?sslmode=disable&application_name=x",
        "TICKSTREAM_REDIS_URL": "rediss://:pw@cache:6380/0",
    }
    cfg = load_config(path, env=env)
    assert cfg.database.url is not None and cfg.redis.url is not None
    dsn = cfg.database.url.reveal()
    assert "sslmode=verify-full" in dsn and "disable" not in dsn and "application_name=x" in dsn
    pool = aioredis.ConnectionPool.from_url(cfg.redis.url.reveal())
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    with pytest.raises(ConfigError, match="rediss://"):
        load_config(path, env={**env, "TICKSTREAM_REDIS_URL": "redis://cache:6379/0"})


def test_api_keys_are_random_carry_their_id_and_hash_in_constant_time() -> None:
    """A key names its id, is 32 random bytes, and only its hash matches it."""
    key_id, key = apikeys.new_key()
    other_id, other = apikeys.new_key()
    assert key_id != other_id and key != other
    assert apikeys.key_id_of(key) == key_id
    assert apikeys.matches(key, apikeys.hash_key(key))
    assert not apikeys.matches(other, apikeys.hash_key(key))
    assert not apikeys.matches(key, None)
    assert apikeys.hash_key(key) != key and key not in apikeys.hash_key(key)
    assert apikeys.display_prefix(key_id) == "tsk_" + key_id.hex[:8]


@pytest.mark.parametrize(
    "bad", ["", "tsk_", "tsk_" + "0" * 32, "tsk_" + "0" * 32 + "_" + "a" * 44, "x" * 500]
)
def test_malformed_keys_carry_no_id(bad: str) -> None:
    """Anything that is not tsk_<32 hex>_<43 url-safe chars> is refused before any lookup."""
    assert apikeys.key_id_of(bad) is None


def test_scopes_and_accounts_are_validated() -> None:
    """Scopes must be the four of PROTOCOL.md; account ids must be sane."""
    assert apikeys.parse_scopes("read trade") == (Scope.READ, Scope.TRADE)
    assert apikeys.parse_scopes("feed:publish,admin,admin") == (Scope.FEED_PUBLISH, Scope.ADMIN)
    with pytest.raises(ValueError, match="unknown scope"):
        apikeys.parse_scopes("read write")
    with pytest.raises(ValueError, match="at least one"):
        apikeys.parse_scopes(" ")
    assert apikeys.parse_accounts("A1, B-2,A1") == ("A1", "B-2")
    with pytest.raises(ValueError, match="bad account"):
        apikeys.parse_accounts("A1,DROP TABLE")
    assert uuid.UUID(int=0) != apikeys.new_key()[0]


def _cached(cache: VerifiedTokens, token: str, keys: KeySet, **kw: object) -> str:
    opts: dict[str, object] = {
        "issuer": "tickstream",
        "audience": "tickstream",
        "leeway": 5.0,
        "now": NOW + 1,
    }
    opts.update(kw)
    return cache.verify(token, keys, **opts).sub  # type: ignore[arg-type]


def test_verified_tokens_check_the_signature_once_and_the_clock_every_time() -> None:
    """A second use of a token is a hit; past its exp (+ leeway) it is refused all the same."""
    cache = VerifiedTokens()
    keys = KeySet({"k1": OLD})
    token = _token(OLD, "k1")
    assert _cached(cache, token, keys) == "alice"
    assert _cached(cache, token, keys) == "alice"
    assert cache.hits == 1 and len(cache) == 1
    assert _cached(cache, token, keys, now=NOW + 604) == "alice"  # inside the leeway
    with pytest.raises(AuthError) as info:
        _cached(cache, token, keys, now=NOW + 606)
    assert info.value.reason == "expired"
    assert len(cache) == 0
    with pytest.raises(AuthError) as info:
        _cached(cache, token, keys, now=NOW - 100)  # the clock went back before its iat
    assert info.value.reason == "issued_in_future"


def test_verified_tokens_follow_the_keys_issuer_and_audience() -> None:
    """A key taken out of the set, or another iss/aud, refuses a token verified before."""
    cache = VerifiedTokens()
    token = _token(OLD, "k1")
    assert _cached(cache, token, KeySet({"k1": OLD, "k2": NEW})) == "alice"
    with pytest.raises(AuthError) as info:
        _cached(cache, token, KeySet({"k2": NEW}))  # k1 retired
    assert info.value.reason == "unknown_kid"
    assert cache.hits == 0
    assert _cached(cache, token, KeySet({"k1": OLD, "k2": NEW})) == "alice"  # same keys: a hit
    assert cache.hits == 1
    with pytest.raises(AuthError) as info:
        _cached(cache, token, KeySet({"k1": OLD, "k2": NEW}), audience="other")
    assert info.value.reason == "wrong_issuer_or_audience"
    assert cache.hits == 1


def test_verified_tokens_keep_no_failure_and_stay_bounded() -> None:
    """Refused tokens are never kept; the least recently used goes past the capacity."""
    cache = VerifiedTokens(capacity=2)
    keys = KeySet({"k1": OLD})
    forged = _token(NEW, "k1")
    for _ in range(2):
        with pytest.raises(AuthError) as info:
            _cached(cache, forged, keys)
        assert info.value.reason == "bad_signature"
    assert len(cache) == 0
    a, b, c = (_token(OLD, "k1", sub=name) for name in ("a", "b", "c"))
    _cached(cache, a, keys)
    _cached(cache, b, keys)
    _cached(cache, a, keys)  # a is now the most recently used
    _cached(cache, c, keys)  # evicts b
    assert len(cache) == 2
    hits = cache.hits
    _cached(cache, a, keys)
    _cached(cache, b, keys)  # verified again: it had been evicted
    assert cache.hits == hits + 1
    with pytest.raises(AuthError):
        _cached(cache, "x" * 9000, keys)
    with pytest.raises(ValueError, match="capacity"):
        VerifiedTokens(capacity=0)
