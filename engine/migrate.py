"""Schema migrations with Alembic (``tickstream db upgrade|downgrade|current|history``).

Alembic is synchronous; the engine calls these functions in a worker thread. The
DSN is handed over in memory and never written to a file or a log line.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config as AlembicConfig

SCRIPT_LOCATION: Final = Path(__file__).parent / "migrations"


def _sqlalchemy_url(dsn: str) -> str:
    # asyncpg speaks plain postgresql:// URLs; SQLAlchemy needs the psycopg driver named.
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def alembic_config(dsn: str, out: io.StringIO | None = None) -> AlembicConfig:
    """Return an Alembic config for ``dsn`` whose output goes to ``out``."""
    cfg = AlembicConfig(stdout=out or io.StringIO())
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["sqlalchemy_url"] = _sqlalchemy_url(dsn)
    return cfg


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str = "-1") -> None:
    """Migrate the database down to ``revision`` (``base`` removes every table)."""
    command.downgrade(alembic_config(dsn), revision)


def current(dsn: str) -> str:
    """Return the revision the database is at, as Alembic prints it."""
    out = io.StringIO()
    command.current(alembic_config(dsn, out))
    return out.getvalue()


def history(dsn: str = "postgresql://unused") -> str:
    """Return the list of revisions, newest first."""
    out = io.StringIO()
    command.history(alembic_config(dsn, out))
    return out.getvalue()
