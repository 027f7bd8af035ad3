"""Public types of the supervisor: restart types, strategies, specs, events, errors."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

DEFAULT_SHUTDOWN: Final = 5.0  # seconds of grace before a child is cancelled
DEFAULT_INTENSITY: Final = 3  # restarts ...
DEFAULT_PERIOD: Final = 5.0  # ... per this many seconds


class Restart(enum.Enum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an exception
    TEMPORARY = "temporary"  # never


class Strategy(enum.Enum):
    """Which children a restart involves."""

    ONE_FOR_ONE = "one_for_one"  # the failed child only
    ONE_FOR_ALL = "one_for_all"  # every child: stop the others in reverse, start all in order
    REST_FOR_ONE = "rest_for_one"  # the failed child and those started after it


class Brutal(enum.Enum):
    """Type of the :data:`BRUTAL` shutdown sentinel."""

    BRUTAL = "brutal"


BRUTAL: Final = Brutal.BRUTAL


class ChildState(enum.Enum):
    """Lifecycle state of one child."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    GIVEN_UP = "given_up"


GiveUpHook: TypeAlias = Callable[[str, BaseException | None], None]


class SupervisorError(Exception):
    """Base of this module's errors about one child of one supervisor."""

    code: ClassVar[str] = "supervisor_error"
    what: ClassVar[str] = "failed"

    def __init__(self, supervisor: str, child_id: str) -> None:
        super().__init__(f"supervisor {supervisor!r}: child {child_id!r} {self.what}")
        self.supervisor = supervisor
        self.child_id = child_id


class SupervisorEscalation(SupervisorError):
    """Restart intensity exceeded; raised ``from`` the failed child's last exception."""

    code = "supervisor_escalation"
    what = "exceeded the restart intensity"


class ChildStartError(SupervisorError):
    """A child given to ``start_child``/``restart_child`` failed to start."""

    code = "child_start_failed"
    what = "failed to start"


class SupervisorNotRunning(RuntimeError):
    """The supervisor is not running (or stopped before answering)."""

    code: ClassVar[str] = "supervisor_not_running"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child.

    Attributes:
        id: Unique within its supervisor.
        start: ``async def run(*, task_status)`` service; ready once it calls
            ``task_status.started()``. An exception (or a return) before that is a crash.
        restart: When it is started again after it exits.
        shutdown: Grace seconds (see the module docstring) or :data:`BRUTAL`.
        stop: Sync hook asking the child to finish by itself, e.g. setting an Event.
        max_restarts, max_period: The child's own budget, checked before the
            supervisor's: one restart more within ``max_period`` seconds and the child is
            ``GIVEN_UP`` instead of restarted, and ``on_give_up(id, last_error)`` is
            called. Restarts it does get also spend the supervisor's budget, so keep
            ``max_restarts`` at or below the supervisor's ``intensity`` to quarantine
            one failing child before it escalates.
    """

    id: str
    start: Callable[..., Awaitable[object]]
    restart: Restart = Restart.PERMANENT
    shutdown: float | Brutal = DEFAULT_SHUTDOWN
    stop: Callable[[], None] | None = None
    max_restarts: int | None = None
    max_period: float | None = None
    on_give_up: GiveUpHook | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("child id must not be empty")
        if isinstance(self.shutdown, float | int) and not self.shutdown >= 0:
            raise ValueError(f"child {self.id!r}: shutdown must be >= 0 seconds or BRUTAL")
        if (self.max_restarts is None) != (self.max_period is None):
            raise ValueError(f"child {self.id!r}: give max_restarts and max_period together")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"child {self.id!r}: max_restarts must be >= 0")
        if self.max_period is not None and not self.max_period > 0:
            raise ValueError(f"child {self.id!r}: max_period must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """A snapshot of one child."""

    id: str
    state: ChildState
    restarts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a supervisor: children per state and restarts in the current run."""

    name: str
    children: int
    starting: int
    running: int
    stopping: int
    stopped: int
    given_up: int
    restarts: int


class EventKind(enum.Enum):
    """What a :class:`SupervisorEvent` reports."""

    STARTED = "started"
    START_FAILED = "start_failed"  # failed before task_status.started()
    EXITED = "exited"
    RESTARTED = "restarted"  # restart decided for `child_id`; its group follows per strategy
    GAVE_UP = "gave_up"
    ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """Something a supervisor did or saw, for logs and metrics."""

    kind: EventKind
    supervisor: str
    child_id: str
    error: BaseException | None = None
    requested: bool = False  # EXITED: stopped by the supervisor, not on its own
    restarts: int = 0  # STARTED: how many times this child was started before, this run
