"""Initial schema: accounts, instruments, orders, order_events, fills, api_keys, audit_log.

Money, prices and quantities are NUMERIC (never float); event times are epoch
milliseconds (BIGINT) as on the wire.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,32}$'),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'halted')),
    created_ts  BIGINT NOT NULL
);

CREATE TABLE instruments (
    symbol      TEXT PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9&_.-]{1,40}$'),
    kind        TEXT NOT NULL CHECK (kind IN ('index', 'equity', 'future', 'option')),
    underlying  TEXT,
    expiry      DATE,
    strike      NUMERIC(20, 4) CHECK (strike > 0),
    option_type TEXT CHECK (option_type IN ('call', 'put')),
    lot_size    INTEGER NOT NULL CHECK (lot_size > 0),
    tick_size   NUMERIC(20, 4) NOT NULL CHECK (tick_size > 0),
    updated_ts  BIGINT NOT NULL,
    CHECK ((kind = 'option') = (strike IS NOT NULL AND option_type IS NOT NULL)),
    CHECK (kind NOT IN ('future', 'option') OR expiry IS NOT NULL)
);
CREATE INDEX instruments_underlying_expiry ON instruments (underlying, expiry);

CREATE TABLE orders (
    id               UUID PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    symbol           TEXT NOT NULL REFERENCES instruments (symbol),
    side             TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity         NUMERIC(20, 4) NOT NULL CHECK (quantity > 0),
    type             TEXT NOT NULL CHECK (type IN ('market', 'limit')),
    price            NUMERIC(20, 4) CHECK (price > 0),
    status           TEXT NOT NULL CHECK (status IN
                         ('open', 'partially_filled', 'filled', 'cancelled', 'rejected')),
    filled_quantity  NUMERIC(20, 4) NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    avg_fill_price   NUMERIC(28, 10),
    tag              TEXT CHECK (length(tag) <= 64),
    idempotency_key  TEXT CHECK (length(idempotency_key) <= 128),
    request_hash     TEXT,
    created_ts       BIGINT NOT NULL,
    updated_ts       BIGINT NOT NULL,
    CHECK ((type = 'limit') = (price IS NOT NULL)),
    CHECK (filled_quantity <= quantity),
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX orders_account_created ON orders (account_id, created_ts DESC);
CREATE INDEX orders_open ON orders (account_id) WHERE status IN ('open', 'partially_filled');

CREATE TABLE order_events (
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    seq         BIGINT NOT NULL CHECK (seq > 0),
    order_id    UUID NOT NULL REFERENCES orders (id),
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (account_id, seq)
);

CREATE TABLE fills (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    order_id     UUID REFERENCES orders (id),
    symbol       TEXT NOT NULL,
    side         TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity     NUMERIC(20, 4) NOT NULL CHECK (quantity > 0),
    price        NUMERIC(28, 10) NOT NULL CHECK (price > 0),
    fee          NUMERIC(20, 4) NOT NULL DEFAULT 0 CHECK (fee >= 0),
    ts           BIGINT NOT NULL,
    external_id  TEXT CHECK (length(external_id) <= 128),
    UNIQUE (account_id, external_id)
);
CREATE INDEX fills_account_id ON fills (account_id, id);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    sub         TEXT NOT NULL CHECK (length(sub) BETWEEN 1 AND 128),
    accounts    TEXT[] NOT NULL DEFAULT '{}',
    scope       TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    created_ts  BIGINT NOT NULL,
    revoked_ts  BIGINT
);

CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts      BIGINT NOT NULL,
    sub     TEXT NOT NULL,
    cmd     TEXT NOT NULL,
    args    JSONB NOT NULL DEFAULT '{}',
    ok      BOOLEAN NOT NULL,
    error   TEXT
);
CREATE INDEX audit_log_ts ON audit_log (ts DESC);
"""

DOWNGRADE = """
DROP TABLE audit_log;
DROP TABLE api_keys;
DROP TABLE fills;
DROP TABLE order_events;
DROP TABLE orders;
DROP TABLE instruments;
DROP TABLE accounts;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
