"""Error codes of the wire contract and the exception that carries them.

Every error the engine shows to a client is one of these codes. HTTP answers with
``{"error": {"code", "message", "details"}}`` and the status below; WebSocket
answers with an ``error`` frame carrying the same code.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class ErrorCode(enum.StrEnum):
    """Stable error codes (snake_case) shared by HTTP and WebSocket answers."""

    BAD_JSON = "bad_json"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NO_MARKET_DATA = "no_market_data"
    ACCOUNT_HALTED = "account_halted"
    DUPLICATE = "duplicate"
    BODY_TOO_LARGE = "body_too_large"
    VALIDATION_FAILED = "validation_failed"
    RATE_LIMITED = "rate_limited"
    DATABASE_UNAVAILABLE = "database_unavailable"
    BUS_UNAVAILABLE = "bus_unavailable"
    BUSY = "busy"
    INTERNAL = "internal_error"


HTTP_STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.BAD_JSON: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.NO_MARKET_DATA: 409,
    ErrorCode.ACCOUNT_HALTED: 409,
    ErrorCode.DUPLICATE: 409,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.BUS_UNAVAILABLE: 503,
    ErrorCode.BUSY: 503,
    ErrorCode.INTERNAL: 500,
}


class ProtocolError(Exception):
    """An error with a stable wire code, safe to show to a client.

    The message must never contain a secret, a stack trace or SQL: it is sent
    to the client as it is.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        details: Mapping[str, object] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: Mapping[str, object] = dict(details or {})
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        """The HTTP status that carries this error."""
        return HTTP_STATUS[self.code]

    def to_body(self) -> dict[str, object]:
        """Return the ``{"error": {...}}`` envelope of PROTOCOL.md."""
        return {
            "error": {
                "code": str(self.code),
                "message": self.message,
                "details": dict(self.details),
            }
        }

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!s}, {self.message!r})"
