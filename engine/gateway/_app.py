"""The quart-trio application factory: error envelope, request ids, metrics, docs."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final

import structlog
import trio
from pydantic import ValidationError
from quart import Response, g, request
from quart_schema import Info, QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.registry import Actors
from protocol import ErrorCode, ProtocolError

from ..context import Engine
from ._accounts import accounts_blueprint
from ._analytics import analytics_blueprint
from ._control import control_blueprint
from ._edge import register_security
from ._health import health_blueprint
from ._ingest import ingest_blueprint
from ._live import live_blueprint
from ._market import market_blueprint
from ._responses import OrjsonProvider, error, error_response
from ._strategies import strategies_blueprint
from ._stream import stream_blueprint

LOG = logging.getLogger(__name__)
ACCESS_LOG = logging.getLogger("tickstream.access")

REQUEST_ID_HEADER: Final = "X-Request-Id"
_REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_CODES: Final = {
    400: ErrorCode.BAD_JSON,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
}


def _validation_details(exc: BaseException) -> dict[str, object]:
    if isinstance(exc, ValidationError):
        return {
            "errors": [
                {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        }
    return {"errors": [{"loc": [], "msg": "body must be a JSON object", "type": "type_error"}]}


def create_app(engine: Engine, actors: Actors | None = None) -> QuartTrio:
    """Build the HTTP/WebSocket application around ``engine``.

    Args:
        engine: the context every route reads its collaborators from.
        actors: the running actors; without them only the health routes exist (tests).

    Returns:
        A quart-trio app, ready to be served by hypercorn.
    """
    app = QuartTrio("tickstream")
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = engine.config.server.max_body_bytes
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["BODY_TIMEOUT"] = engine.config.server.read_timeout
    app.extensions["tickstream.engine"] = engine
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(title="tickstream", version="1"),
        conversion_preference="pydantic",
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
    )
    app.register_blueprint(health_blueprint(engine, actors))
    register_security(app, engine, docs_path="/docs")
    if actors is not None:
        app.register_blueprint(ingest_blueprint(engine, actors))
        app.register_blueprint(market_blueprint(engine, actors))
        app.register_blueprint(accounts_blueprint(engine, actors))
        app.register_blueprint(control_blueprint(engine, actors))
        app.register_blueprint(analytics_blueprint(engine, actors.market.calendar))
        app.register_blueprint(live_blueprint(engine, actors))
        app.register_blueprint(strategies_blueprint(engine, actors, actors.strategies))
        if actors.stream is not None:
            app.register_blueprint(stream_blueprint(engine, actors.stream))
    metrics = engine.metrics

    @app.before_request
    async def _begin() -> None:
        rid = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = rid if _REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
        g.started = trio.current_time()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    async def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            metrics.http_latency.labels(route).observe(trio.current_time() - started)
        response.headers[REQUEST_ID_HEADER] = getattr(g, "request_id", "")
        ACCESS_LOG.info("%s %s %d", request.method, route, response.status_code)
        return response

    @app.errorhandler(ProtocolError)
    async def _protocol_error(exc: ProtocolError) -> Response:
        metrics.errors.labels(str(exc.code)).inc()
        return error_response(exc)

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError) -> Response:
        metrics.errors.labels(str(ErrorCode.VALIDATION_FAILED)).inc()
        return error_response(
            ProtocolError(
                ErrorCode.VALIDATION_FAILED,
                "request failed validation",
                _validation_details(exc.validation_error),
            )
        )

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, ErrorCode.INTERNAL)
        metrics.errors.labels(str(code)).inc()
        message = {
            ErrorCode.BAD_JSON: "body is not valid JSON",
            ErrorCode.NOT_FOUND: "no such resource",
            ErrorCode.METHOD_NOT_ALLOWED: f"method {request.method} not allowed here",
            ErrorCode.BODY_TOO_LARGE: "request body too large",
        }.get(code, exc.name)
        response = error(code, message)
        response.status_code = status if code is not ErrorCode.INTERNAL else 500
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        # NOTE: never a traceback or an exception text in the response; the log has it.
        LOG.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
        metrics.errors.labels(str(ErrorCode.INTERNAL)).inc()
        return error(ErrorCode.INTERNAL, "internal error", request_id=getattr(g, "request_id", ""))

    return app


def engine_of(app: QuartTrio) -> Engine:
    """Return the engine context an app was built around."""
    engine: Engine = app.extensions["tickstream.engine"]
    return engine
