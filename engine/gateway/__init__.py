"""HTTP and WebSocket edge: the quart-trio app and its hypercorn server."""

from ._app import create_app as create_app
from ._app import engine_of as engine_of
from ._responses import error_response as error_response
from ._responses import json_response as json_response
from ._server import Gateway as Gateway
