"""OTP-style supervision for trio services (see ``_supervisor`` for the semantics)."""

from ._supervisor import INBOX_SIZE as INBOX_SIZE
from ._supervisor import Supervisor as Supervisor
from ._types import BRUTAL as BRUTAL
from ._types import DEFAULT_INTENSITY as DEFAULT_INTENSITY
from ._types import DEFAULT_PERIOD as DEFAULT_PERIOD
from ._types import DEFAULT_SHUTDOWN as DEFAULT_SHUTDOWN
from ._types import Brutal as Brutal
from ._types import ChildInfo as ChildInfo
from ._types import ChildSpec as ChildSpec
from ._types import ChildStartError as ChildStartError
from ._types import ChildState as ChildState
from ._types import EventKind as EventKind
from ._types import Restart as Restart
from ._types import Strategy as Strategy
from ._types import SupervisorError as SupervisorError
from ._types import SupervisorEscalation as SupervisorEscalation
from ._types import SupervisorEvent as SupervisorEvent
from ._types import SupervisorNotRunning as SupervisorNotRunning
from ._types import SupervisorStatistics as SupervisorStatistics
