"""JSON responses and the error envelope of PROTOCOL.md."""

from __future__ import annotations

import math
from typing import Any

from quart import Response
from quart.json.provider import JSONProvider

import protocol
from protocol import ErrorCode, ProtocolError

JSON_TYPE = "application/json"


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Return ``body`` encoded by orjson (Decimals as decimal strings)."""
    return Response(protocol.dumps(body), status=status, content_type=JSON_TYPE, headers=headers)


def error_response(error: ProtocolError) -> Response:
    """Return the ``{"error": {...}}`` envelope with the error's HTTP status."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error.to_body(), error.http_status, headers)


def error(code: ErrorCode, message: str, **details: Any) -> Response:
    """Shorthand for :func:`error_response` of a new :class:`ProtocolError`."""
    return error_response(ProtocolError(code, message, details))


class OrjsonProvider(JSONProvider):
    """Quart JSON provider backed by the wire encoder of ``protocol``."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return protocol.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return protocol.loads(s)
