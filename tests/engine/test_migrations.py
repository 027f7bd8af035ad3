"""Alembic migrations on the real PostgreSQL: up, down to base, up again, same schema."""

from __future__ import annotations

import psycopg
import pytest

from engine import migrate

pytestmark = pytest.mark.integration


def _schema(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default,"
                " numeric_precision, numeric_scale FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY table_name, column_name"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                " ORDER BY 1, 2"
            ).fetchall(),
        }


def test_upgrade_downgrade_upgrade_gives_the_same_schema(empty_dsn: str) -> None:
    """A fresh database migrates to head, back to base (empty) and to head again identically."""
    migrate.upgrade(empty_dsn)
    first = _schema(empty_dsn)
    tables = {row[0] for row in first["columns"]}
    assert {
        "accounts",
        "instruments",
        "orders",
        "order_events",
        "fills",
        "api_keys",
        "audit_log",
        "alembic_version",
    } <= tables
    assert "(head)" in migrate.current(empty_dsn)

    migrate.downgrade(empty_dsn, "base")
    after_down = {row[0] for row in _schema(empty_dsn)["columns"]}
    assert after_down <= {"alembic_version"}
    assert migrate.current(empty_dsn).strip() == ""

    migrate.upgrade(empty_dsn)
    assert _schema(empty_dsn) == first


def test_money_columns_are_numeric_never_float(empty_dsn: str) -> None:
    """Prices, quantities and fees are NUMERIC in every table."""
    migrate.upgrade(empty_dsn)
    columns = _schema(empty_dsn)["columns"]
    money = {"quantity", "price", "fee", "filled_quantity", "avg_fill_price", "strike", "tick_size"}
    types = {(c[0], c[1]): c[2] for c in columns if c[1] in money}
    assert types and all(t == "numeric" for t in types.values())
    assert not [c for c in columns if c[2] in ("real", "double precision")]


def test_history_lists_the_initial_revision() -> None:
    """`db history` shows every revision with its message."""
    assert "Initial schema" in migrate.history()
