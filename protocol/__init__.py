"""Wire formats of tickstream: error codes, JSON encoding, validation.

Pure: imports nothing from ``engine`` or ``actors`` and does no I/O.
"""

from ._errors import HTTP_STATUS as HTTP_STATUS
from ._errors import ErrorCode as ErrorCode
from ._errors import ProtocolError as ProtocolError
from ._json import dumps as dumps
from ._json import loads as loads
