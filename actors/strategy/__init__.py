"""The strategy actor: named groups of legs per account, valued live (M2M, Greeks, payoff)."""

from .actor import THROTTLE as THROTTLE
from .actor import StrategyActor as StrategyActor
from .actor import StrategyStatistics as StrategyStatistics
from .messages import Command as Command
from .messages import CreateStrategy as CreateStrategy
from .messages import DeleteStrategy as DeleteStrategy
from .messages import GetPayoff as GetPayoff
from .messages import GetStrategy as GetStrategy
from .messages import ListQuery as ListQuery
from .messages import ListStrategies as ListStrategies
from .messages import PatchStrategy as PatchStrategy
from .model import Leg as Leg
from .model import PayoffGrid as PayoffGrid
from .model import Strategy as Strategy
from .model import StrategyGreeks as StrategyGreeks
