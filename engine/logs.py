"""Structured logging: JSON lines on stdout (or a console format for humans).

The request id lives in a context variable bound by the gateway, so every line
logged while serving a request carries it. Library loggers (``logging``) go
through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Final, Literal

import structlog

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")

# Keys whose values are never logged, whatever logs them.
_REDACT: Final = frozenset(
    {"password", "secret", "token", "jwt_secret", "api_key", "authorization"}
)


def _redact(
    _: object, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key in event_dict.keys() & _REDACT:
        event_dict[key] = "**********"
    return event_dict


def configure_logging(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    """Route ``logging`` and structlog to stdout as JSON lines (or console text).

    Call once, from ``main``, before anything logs.
    """
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _redact,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # hypercorn's access log duplicates ours; its error log is kept.
    logging.getLogger("hypercorn.access").disabled = True
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the root log level at run time (the control channel's ``log.level``).

    Raises:
        ValueError: for a level outside DEBUG, INFO, WARNING, ERROR.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    logging.getLogger().setLevel(level)
