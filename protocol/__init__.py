"""Wire formats of tickstream: error codes, JSON encoding, validation.

Pure: imports nothing from ``engine`` or ``actors`` and does no I/O.
"""

from ._channels import Channel as Channel
from ._channels import ChannelError as ChannelError
from ._channels import ChannelKind as ChannelKind
from ._channels import StreamRequest as StreamRequest
from ._channels import parse_channel as parse_channel
from ._channels import parse_stream_frame as parse_stream_frame
from ._control import COMMANDS as COMMANDS
from ._control import LOG_LEVELS as LOG_LEVELS
from ._control import ControlCommand as ControlCommand
from ._control import ControlError as ControlError
from ._control import parse_control_frame as parse_control_frame
from ._decimal import DecimalFormatError as DecimalFormatError
from ._decimal import parse_count as parse_count
from ._decimal import parse_decimal as parse_decimal
from ._errors import HTTP_STATUS as HTTP_STATUS
from ._errors import ErrorCode as ErrorCode
from ._errors import ProtocolError as ProtocolError
from ._instruments import Instrument as Instrument
from ._instruments import InstrumentError as InstrumentError
from ._instruments import parse_instrument as parse_instrument
from ._json import dumps as dumps
from ._json import loads as loads
from ._orders import OrderRequest as OrderRequest
from ._orders import RequestError as RequestError
from ._orders import TradeRequest as TradeRequest
from ._orders import check_multiples as check_multiples
from ._orders import parse_order_request as parse_order_request
from ._orders import parse_trade_request as parse_trade_request
from ._symbols import ParsedSymbol as ParsedSymbol
from ._symbols import format_strike as format_strike
from ._symbols import future_symbol as future_symbol
from ._symbols import option_symbol as option_symbol
from ._symbols import parse_symbol_name as parse_symbol_name
from ._ticks import Tick as Tick
from ._ticks import TickError as TickError
from ._ticks import parse_symbol as parse_symbol
from ._ticks import parse_ticks as parse_ticks
