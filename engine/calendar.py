"""Load the NSE market calendar from the data files in ``config/calendar/``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Final

from .analytics import MarketCalendar
from .config import ConfigError

CALENDAR_DIR: Final = Path("config/calendar")


def load_calendar(directory: Path = CALENDAR_DIR) -> MarketCalendar:
    """Read ``nse.toml`` and ``lots.toml`` from ``directory``.

    Raises:
        ConfigError: a file is missing or its data is invalid (the message names the key).
    """
    try:
        nse = tomllib.loads((directory / "nse.toml").read_text(encoding="utf-8"))
        lots = tomllib.loads((directory / "lots.toml").read_text(encoding="utf-8"))
        return MarketCalendar.from_mapping(nse, lots=lots)
    except OSError as exc:
        raise ConfigError(f"cannot read calendar data in {directory}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"calendar data in {directory} is not valid TOML: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"calendar data in {directory}: {exc}") from None
