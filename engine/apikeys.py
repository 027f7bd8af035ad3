"""API keys: created by the CLI, exchanged for short-lived JWTs at ``POST /v1/auth/token``.

A key is ``tsk_<id>_<secret>``: ``id`` is the row's UUID (32 hex digits, not secret: it
finds the row), ``secret`` is 32 random bytes from :mod:`secrets`, url-safe base64. Only
the SHA-256 of the whole key is stored (a 256-bit random secret needs no slow hash or
salt: nothing can be guessed), and hashes are compared with
:func:`hmac.compare_digest`. The key is shown once, by ``tickstream apikey create``.
All SQL is parameterised.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .auth import Scope
from .store import Store

KEY_BYTES: Final = 32
KEY_PREFIX: Final = "tsk_"
MAX_KEY_CHARS: Final = 200
_KEY_RE: Final = re.compile(r"^tsk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
_ACCOUNT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Compared against when the id is unknown, so a miss costs what a hit costs.
_DUMMY_HASH: Final = hashlib.sha256(b"tickstream: no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, as ``apikey list`` shows it (never the key or its hash)."""

    id: uuid.UUID
    sub: str
    scopes: tuple[Scope, ...]
    accounts: tuple[str, ...]
    prefix: str
    created_ts: int  # epoch ms
    revoked_ts: int | None  # epoch ms

    @property
    def revoked(self) -> bool:
        """Whether the key was revoked."""
        return self.revoked_ts is not None


def hash_key(key: str) -> str:
    """Return the stored form of ``key`` (hex SHA-256)."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[uuid.UUID, str]:
    """Return a fresh ``(id, key)``."""
    key_id = uuid.uuid4()
    return key_id, f"{KEY_PREFIX}{key_id.hex}_{secrets.token_urlsafe(KEY_BYTES)}"


def key_id_of(key: str) -> uuid.UUID | None:
    """Return the id a well-formed key carries, None for anything else."""
    match = _KEY_RE.match(key) if len(key) <= MAX_KEY_CHARS else None
    return uuid.UUID(hex=match.group(1)) if match else None


def display_prefix(key_id: uuid.UUID) -> str:
    """Return the short, non-secret name of a key (for lists and logs)."""
    return f"{KEY_PREFIX}{key_id.hex[:8]}"


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """Parse a space- or comma-separated scope list.

    Raises:
        ValueError: empty, or a scope outside ``read trade feed:publish admin``.
    """
    names = [s for s in re.split(r"[\s,]+", text) if s]
    valid = ", ".join(str(s) for s in Scope)
    if not names:
        raise ValueError(f"at least one scope is needed ({valid})")
    try:
        return tuple(dict.fromkeys(Scope(s) for s in names))
    except ValueError:
        raise ValueError(f"unknown scope in {text!r}; valid: {valid}") from None


def parse_accounts(text: str) -> tuple[str, ...]:
    """Parse a comma-separated account list (may be empty).

    Raises:
        ValueError: an account id that is not ``[A-Za-z0-9_-]{1,32}``.
    """
    accounts = [a.strip() for a in text.split(",") if a.strip()]
    for account in accounts:
        if not _ACCOUNT_RE.match(account):
            raise ValueError(f"bad account id {account!r}")
    return tuple(dict.fromkeys(accounts))


def matches(key: str, stored_hash: str | None) -> bool:
    """Return whether ``key`` hashes to ``stored_hash``, in constant time."""
    return hmac.compare_digest(hash_key(key), stored_hash or _DUMMY_HASH) and bool(stored_hash)


def _row(r: Any) -> ApiKey:
    return ApiKey(
        id=r["id"],
        sub=r["sub"],
        scopes=tuple(Scope(s) for s in r["scope"].split()),
        accounts=tuple(r["accounts"]),
        prefix=r["prefix"],
        created_ts=r["created_ts"],
        revoked_ts=r["revoked_ts"],
    )


_INSERT: Final = """
INSERT INTO api_keys (id, sub, accounts, scope, key_hash, prefix, created_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, sub, accounts, scope, prefix, created_ts, revoked_ts
"""
_LIST: Final = """
SELECT id, sub, accounts, scope, prefix, created_ts, revoked_ts
FROM api_keys ORDER BY created_ts, id
"""
_REVOKE: Final = """
UPDATE api_keys SET revoked_ts = COALESCE(revoked_ts, $2) WHERE id = $1
RETURNING id, sub, accounts, scope, prefix, created_ts, revoked_ts
"""
_LOOKUP: Final = """
SELECT id, sub, accounts, scope, prefix, created_ts, revoked_ts, key_hash
FROM api_keys WHERE id = $1
"""


async def create(
    store: Store, *, sub: str, scopes: Iterable[Scope], accounts: Sequence[str], now_ms: int
) -> tuple[ApiKey, str]:
    """Store a new key; return it and the key itself (shown once, never stored)."""
    key_id, key = new_key()
    scope = " ".join(str(s) for s in scopes)
    row = await store.fetchrow(
        _INSERT, key_id, sub, list(accounts), scope, hash_key(key), display_prefix(key_id), now_ms
    )
    return _row(row), key


async def list_keys(store: Store) -> list[ApiKey]:
    """Return every key, oldest first."""
    return [_row(r) for r in await store.fetch(_LIST)]


async def revoke(store: Store, key_id: uuid.UUID, now_ms: int) -> ApiKey | None:
    """Revoke a key at once (kept as it was if already revoked); None when unknown."""
    row = await store.fetchrow(_REVOKE, key_id, now_ms)
    return None if row is None else _row(row)


async def lookup(store: Store, key_id: uuid.UUID) -> tuple[ApiKey, str] | None:
    """Return a key and its stored hash, by id (None when unknown)."""
    row = await store.fetchrow(_LOOKUP, key_id)
    if row is None:
        return None
    return _row(row), str(row["key_hash"])
