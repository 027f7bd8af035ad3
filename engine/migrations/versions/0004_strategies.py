"""Strategies: named groups of legs per account (symbol, signed quantity, entry price).

Legs live in their own table, one row per leg in the order the client gave them.
Quantities and prices are NUMERIC like everywhere else; ``seq`` keeps the creation
order stable across restarts even when two strategies share a millisecond.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE strategies (
    id          UUID PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    account_id  TEXT NOT NULL,
    name        TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    created_ts  BIGINT NOT NULL,
    updated_ts  BIGINT NOT NULL,
    CONSTRAINT strategies_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id)
);
CREATE INDEX strategies_account_seq ON strategies (account_id, seq);

CREATE TABLE strategy_legs (
    strategy_id  UUID NOT NULL REFERENCES strategies (id) ON DELETE CASCADE,
    position     SMALLINT NOT NULL CHECK (position BETWEEN 0 AND 49),
    symbol       TEXT NOT NULL,
    quantity     NUMERIC(20, 0) NOT NULL CHECK (quantity <> 0),
    entry_price  NUMERIC(28, 10) NOT NULL CHECK (entry_price > 0),
    PRIMARY KEY (strategy_id, position),
    CONSTRAINT strategy_legs_symbol_fk FOREIGN KEY (symbol) REFERENCES instruments (symbol)
);
"""

DOWNGRADE = """
DROP TABLE strategy_legs;
DROP TABLE strategies;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
