"""Ledger: outbox of events to publish, account snapshots, broker fills without an order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE outbox (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id),
    channel       TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    payload       JSONB NOT NULL,
    created_ts    BIGINT NOT NULL,
    published_ts  BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (account_id, id) WHERE published_ts IS NULL;

CREATE TABLE account_snapshots (
    account_id    TEXT PRIMARY KEY REFERENCES accounts (id),
    last_fill_id  BIGINT NOT NULL,
    state         JSONB NOT NULL,
    created_ts    BIGINT NOT NULL
);

-- A broker trade (POST /trades) is a fill with no order of ours.
ALTER TABLE order_events ALTER COLUMN order_id DROP NOT NULL;
CREATE INDEX order_events_order ON order_events (order_id);
"""

DOWNGRADE = """
DROP INDEX order_events_order;
DELETE FROM order_events WHERE order_id IS NULL;
ALTER TABLE order_events ALTER COLUMN order_id SET NOT NULL;
DROP TABLE account_snapshots;
DROP TABLE outbox;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
