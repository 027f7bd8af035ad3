"""Candles: closed OHLCV bars per symbol and timeframe (a hypertable under TimescaleDB).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE candles (
    symbol  TEXT NOT NULL,
    tf      TEXT NOT NULL CHECK (tf IN ('1m', '5m', '15m', '1h', '1d')),
    ts      BIGINT NOT NULL,
    open    NUMERIC(28, 10) NOT NULL,
    high    NUMERIC(28, 10) NOT NULL,
    low     NUMERIC(28, 10) NOT NULL,
    close   NUMERIC(28, 10) NOT NULL,
    volume  BIGINT NOT NULL CHECK (volume >= 0),
    PRIMARY KEY (symbol, tf, ts)
);

-- TimescaleDB where the server has it (production image), a plain table otherwise.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM create_hypertable('candles', 'ts', chunk_time_interval => 604800000,
                                  if_not_exists => TRUE);
    END IF;
END
$$;
"""

DOWNGRADE = """
DROP TABLE candles;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
