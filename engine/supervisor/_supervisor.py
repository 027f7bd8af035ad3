"""OTP-style supervision for trio services.

A :class:`Supervisor` starts ordered :class:`ChildSpec` services in its own nursery with
``await nursery.start(...)``, so each child is ready before the next starts, and restarts
them per restart type and strategy. Restarts spend an ``intensity``/``period`` budget;
past it the supervisor stops every child in reverse start order and raises
:class:`SupervisorEscalation` to its parent. A child may carry its own budget: past it,
that child alone is quarantined (``GIVEN_UP``) and nothing escalates.

Stopping a child is graceful then brutal (STYLE 17). With a ``stop`` hook: call it and
set the child's cancel-scope deadline to ``now + shutdown``. Without one, or with
``BRUTAL``: cancel at once; ``shutdown`` is then the allowance for shielded cleanup, and
overrunning it is logged. Either way the supervisor awaits the child's end before it
reports it stopped or starts it again (STYLE 18): a trio task cannot be abandoned, and
two incarnations of one child must never overlap.

Only the supervisor's loop task mutates the child table: child exits, :meth:`stop` and
the dynamic-child calls all arrive through one inbox and are handled one at a time.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import trio

from ._types import (
    DEFAULT_INTENSITY,
    DEFAULT_PERIOD,
    Brutal,
    ChildInfo,
    ChildSpec,
    ChildStartError,
    ChildState,
    EventKind,
    Restart,
    Strategy,
    SupervisorEscalation,
    SupervisorEvent,
    SupervisorNotRunning,
    SupervisorStatistics,
)

logger = logging.getLogger(__name__)

# NOTE: unbounded on purpose (STYLE 19). The flow is circular: the loop awaits a child's
# end (stop, group restart) while that child's task reports its exit to the same loop,
# and stop() is sync so it cannot wait for room. Growth is bounded anyway: one report
# per child start, one message per stop() or dynamic-child call.
INBOX_SIZE: Final = math.inf


@dataclass(eq=False, slots=True)
class _Child:
    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    generation: int = 0  # bumped per start: exit reports of older incarnations are stale
    restarts: int = 0
    needs_start: bool = True  # must be started by the next start sequence touching it
    exit_pending: bool = False  # exited on its own; the loop has not handled it yet
    last_error: BaseException | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    history: deque[float] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class _Exited:
    child: _Child
    generation: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class _StopRequested:
    pass


@dataclass(eq=False, slots=True)
class _Call:
    op: Callable[[], Awaitable[None]]
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


_Message: TypeAlias = _Exited | _StopRequested | _Call


class _StatusRelay:
    # Forwards task_status.started() and remembers whether the child got that far.
    def __init__(self, inner: trio.TaskStatus[object]) -> None:
        self._inner = inner
        self.reported = False

    def started(self, value: object = None) -> None:
        self._inner.started(value)
        self.reported = True


def _over_budget(history: deque[float], limit: int, period: float, now: float) -> bool:
    # Record a restart at `now`; a restart exactly `period` seconds old has expired.
    history.append(now)
    while history[0] <= now - period:
        history.popleft()
    return len(history) > limit


class Supervisor:
    """Start, watch and restart children with OTP semantics.

    Args:
        name: Name used in logs, events and errors.
        children: Static children, started in this order and stopped in reverse.
        strategy: Which children a restart involves.
        intensity: Restarts allowed within ``period`` seconds; one more escalates.
        period: Length of the intensity window in seconds.
        on_event: Sync hook called with every :data:`SupervisorEvent`; its errors are logged.

    Raises:
        ValueError: On a duplicate child id, ``intensity < 0`` or ``period <= 0``.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = DEFAULT_INTENSITY,
        period: float = DEFAULT_PERIOD,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        if intensity < 0 or not period > 0:
            raise ValueError(f"supervisor {name!r}: need intensity >= 0 and period > 0")
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise ValueError(f"supervisor {name!r}: duplicate child ids in {ids!r}")
        self.name = name
        self._strategy = strategy
        self._intensity = intensity
        self._period = period
        self._on_event = on_event
        self._children = [_Child(spec) for spec in children]
        self._history: deque[float] = deque()
        self._restarts = 0
        self._stop_requested = False
        self._nursery: trio.Nursery | None = None
        self._inbox: trio.MemorySendChannel[_Message] | None = None

    def as_child(
        self, *, restart: Restart = Restart.PERMANENT, shutdown: float | Brutal = math.inf
    ) -> ChildSpec:
        """Return a spec running this supervisor under a parent, stopped via :meth:`stop`.

        The default ``shutdown`` is unbounded, as OTP does for supervisor children.
        """
        return ChildSpec(self.name, self.run, restart=restart, shutdown=shutdown, stop=self.stop)

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, report started, then supervise until stopped.

        Each run starts afresh from the current child specs (static ones plus those added
        with :meth:`start_child`); restart counts and budgets are per run.

        Raises:
            SupervisorEscalation: Restart intensity exceeded, after every child has been
                stopped; chained from the failed child's last exception. Raised before
                ``task_status.started()`` when it happens during the initial start.
            RuntimeError: The supervisor is already running.

        Cancellation: cancelling ``run()`` cancels every child at once (no stop hooks, no
        grace) and propagates; use :meth:`stop` for an orderly shutdown.
        """
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._children = [_Child(child.spec) for child in self._children]
        self._history.clear()
        self._restarts = 0
        self._stop_requested = False
        send, receive = trio.open_memory_channel[_Message](INBOX_SIZE)
        escalation: SupervisorEscalation | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._inbox = nursery, send
                escalation = await self._settle(await self._start_sequence(self._children))
                if escalation is None:
                    task_status.started(self)
                    escalation = await self._supervise(receive)
        finally:
            self._nursery = self._inbox = None
            self._fail_pending_calls(receive)
            send.close()
            receive.close()
            for child in self._children:
                if child.state is not ChildState.GIVEN_UP:
                    child.state = ChildState.STOPPED
        if escalation is not None:
            raise escalation from escalation.__cause__

    def stop(self) -> None:
        """Request an orderly shutdown: children stop one at a time in reverse start order.

        ``run()`` then returns normally. No-op when the supervisor is not running.
        """
        if self._inbox is not None and not self._stop_requested:
            self._stop_requested = True
            self._inbox.send_nowait(_StopRequested())

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child after the existing ones and wait until it has started.

        Raises:
            ValueError: A child with this id already exists.
            ChildStartError: The child failed before reporting started; it is not added.
            SupervisorNotRunning: The supervisor is not running.

        Cancellation: cancelling the caller abandons the wait; the start still completes.
        Never call this from a child of the same supervisor before that child reported
        started: the supervisor handles calls one at a time and is waiting for it.
        """
        await self._call(functools.partial(self._op_start_child, spec))

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child with its shutdown policy, wait until it has finished, remove it.

        Raises:
            KeyError: No child has this id.
            SupervisorNotRunning: The supervisor is not running.

        Cancellation: cancelling the caller abandons the wait; the stop still completes.
        """
        await self._call(functools.partial(self._op_terminate_child, child_id))

    async def restart_child(self, child_id: str) -> None:
        """Stop a child if it runs, then start it again; revives a ``GIVEN_UP`` child.

        Raises:
            KeyError: No child has this id.
            ChildStartError: The child failed to start; it is left stopped.
            SupervisorNotRunning: The supervisor is not running.

        Cancellation: cancelling the caller abandons the wait; the restart still completes.
        """
        await self._call(functools.partial(self._op_restart_child, child_id))

    def children(self) -> list[ChildInfo]:
        """Return a snapshot of every child, in start order."""
        return [
            ChildInfo(
                c.spec.id,
                c.state,
                c.restarts,
                None if c.last_error is None else repr(c.last_error),
            )
            for c in self._children
        ]

    def statistics(self) -> SupervisorStatistics:
        """Return children counts per state and the restarts of the current run."""
        states = [c.state for c in self._children]
        return SupervisorStatistics(
            name=self.name,
            children=len(states),
            starting=states.count(ChildState.STARTING),
            running=states.count(ChildState.RUNNING),
            stopping=states.count(ChildState.STOPPING),
            stopped=states.count(ChildState.STOPPED),
            given_up=states.count(ChildState.GIVEN_UP),
            restarts=self._restarts,
        )

    # -- the loop ---------------------------------------------------------------------

    async def _supervise(
        self, receive: trio.MemoryReceiveChannel[_Message]
    ) -> SupervisorEscalation | None:
        while True:
            match await receive.receive():
                case _StopRequested():
                    await self._stop_all()
                    return None
                case _Call() as call:
                    await self._handle_call(call)
                case _Exited(child=child, generation=generation, error=error):
                    if child.generation == generation and child.exit_pending:
                        escalation = await self._settle([(child, error)])
                        if escalation is not None:
                            return escalation

    async def _settle(
        self, failures: list[tuple[_Child, BaseException | None]]
    ) -> SupervisorEscalation | None:
        # Handle exits one by one; a failed (re)start is itself a new exit to handle.
        pending = deque(failures)
        while pending and not self._stop_requested:
            child, error = pending.popleft()
            child.exit_pending = False
            spec, now = child.spec, trio.current_time()
            if spec.restart is Restart.TEMPORARY or (
                spec.restart is Restart.TRANSIENT and error is None
            ):
                to_start = self._resume()
            elif (
                spec.max_restarts is not None
                and spec.max_period is not None
                and _over_budget(child.history, spec.max_restarts, spec.max_period, now)
            ):
                self._give_up(child, error)
                to_start = self._resume()
            elif _over_budget(self._history, self._intensity, self._period, now):
                logger.error("%s: child %r exceeded restart intensity", self.name, spec.id)
                self._emit(SupervisorEvent(EventKind.ESCALATED, self.name, spec.id, error))
                await self._stop_all()
                escalation = SupervisorEscalation(self.name, spec.id)
                escalation.__cause__ = error
                return escalation
            else:
                self._emit(SupervisorEvent(EventKind.RESTARTED, self.name, spec.id, error))
                to_start = await self._stop_group(child)
            pending.extend(await self._start_sequence(to_start))
        return None

    def _resume(self) -> list[_Child]:
        # A child that is not restarted may have aborted a start sequence: finish it.
        return [child for child in self._children if child.needs_start]

    async def _stop_group(self, failed: _Child) -> list[_Child]:
        # Stop the siblings the strategy involves (reverse order); return who to start.
        if self._strategy is Strategy.ONE_FOR_ALL:
            group = list(self._children)
        elif self._strategy is Strategy.REST_FOR_ONE:
            group = self._children[self._children.index(failed) :]
        else:
            group = [failed]
        for child in group:
            # A crashed sibling whose report is still queued restarts with the group, as in
            # OTP; siblings that ended normally earlier or were given up stay as they are.
            child.needs_start = (
                child is failed
                or child.needs_start
                or (
                    child.spec.restart is not Restart.TEMPORARY
                    and (child.state is ChildState.RUNNING or child.exit_pending)
                )
            )
        for child in reversed(group):
            await self._stop(child)
        return [child for child in group if child.needs_start]

    async def _start_sequence(
        self, children: list[_Child]
    ) -> list[tuple[_Child, BaseException | None]]:
        failures: list[tuple[_Child, BaseException | None]] = []
        for child in list(children):
            if self._stop_requested:
                break
            error = await self._start(child)
            if error is not None:
                failures.append((child, error))
                # Later children may depend on this one, unless they are independent.
                if self._strategy is not Strategy.ONE_FOR_ONE:
                    break
        return failures

    async def _start(self, child: _Child) -> Exception | None:
        nursery, inbox = self._nursery, self._inbox
        if nursery is None or inbox is None:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        if child.generation:
            child.restarts += 1
            self._restarts += 1
        child.generation += 1
        child.state, child.exit_pending, child.needs_start = ChildState.STARTING, False, False
        child.scope, child.done = trio.CancelScope(), trio.Event()
        try:
            await nursery.start(self._child_main, child, inbox)
        except Exception as exc:  # the child's own failure before started(), never Cancelled
            child.state, child.last_error = ChildState.STOPPED, exc
            logger.warning("%s: child %r failed to start: %r", self.name, child.spec.id, exc)
            self._emit(SupervisorEvent(EventKind.START_FAILED, self.name, child.spec.id, exc))
            return exc
        if child.state is ChildState.STARTING:  # else it already exited: its report is queued
            child.state = ChildState.RUNNING
        logger.debug("%s: started child %r", self.name, child.spec.id)
        self._emit(
            SupervisorEvent(EventKind.STARTED, self.name, child.spec.id, restarts=child.restarts)
        )
        return None

    async def _child_main(
        self,
        child: _Child,
        inbox: trio.MemorySendChannel[_Message],
        *,
        task_status: trio.TaskStatus[object],
    ) -> None:
        relay = _StatusRelay(task_status)
        generation, scope, done = child.generation, child.scope, child.done
        error: Exception | None = None
        try:
            with scope:
                await child.spec.start(task_status=relay)
        except Exception as exc:
            # Cancelled and groups holding it are BaseException: they propagate untouched.
            if not relay.reported:
                raise  # nursery.start() hands it to _start()
            error = exc
        finally:
            done.set()
        if not relay.reported:
            return  # nursery.start() raises RuntimeError in _start()
        requested = child.generation != generation or child.state is ChildState.STOPPING
        if error is not None:
            child.last_error = error
        self._emit(
            SupervisorEvent(EventKind.EXITED, self.name, child.spec.id, error, requested=requested)
        )
        if requested:
            return
        if error is None:
            logger.info("%s: child %r exited", self.name, child.spec.id)
        else:
            logger.warning("%s: child %r crashed: %r", self.name, child.spec.id, error)
        child.state, child.exit_pending = ChildState.STOPPED, True
        inbox.send_nowait(_Exited(child, generation, error))

    async def _stop(self, child: _Child) -> None:
        if child.state is not ChildState.RUNNING:
            return
        child.state = ChildState.STOPPING
        shutdown, hook = child.spec.shutdown, child.spec.stop
        if isinstance(shutdown, Brutal) or hook is None:
            child.scope.cancel()
        else:
            child.scope.deadline = min(child.scope.deadline, trio.current_time() + shutdown)
            try:
                hook()
            except Exception:
                logger.exception("%s: stop hook of %r failed", self.name, child.spec.id)
                child.scope.cancel()
        if not isinstance(shutdown, Brutal) and hook is None:
            with trio.move_on_after(shutdown):
                await child.done.wait()
            if not child.done.is_set():
                logger.warning(
                    "%s: child %r still cleaning up %ss after cancellation; waiting",
                    self.name,
                    child.spec.id,
                    shutdown,
                )
        await child.done.wait()
        child.state = ChildState.STOPPED

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children)):
            child.needs_start = False
            await self._stop(child)

    def _give_up(self, child: _Child, error: BaseException | None) -> None:
        child.state = ChildState.GIVEN_UP
        logger.error("%s: giving up on child %r: %r", self.name, child.spec.id, error)
        self._emit(SupervisorEvent(EventKind.GAVE_UP, self.name, child.spec.id, error))
        if child.spec.on_give_up is not None:
            try:
                child.spec.on_give_up(child.spec.id, error)
            except Exception:
                logger.exception("%s: on_give_up hook of %r failed", self.name, child.spec.id)

    def _emit(self, event: SupervisorEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("%s: on_event hook failed for %r", self.name, event)

    # -- dynamic children -------------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[None]]) -> None:
        if self._inbox is None:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        call = _Call(op)
        self._inbox.send_nowait(call)
        await call.done.wait()
        if call.error is not None:
            raise call.error

    async def _handle_call(self, call: _Call) -> None:
        # Pessimistic default: stands if the loop is cancelled mid-operation.
        call.error = SupervisorNotRunning(f"supervisor {self.name!r} stopped")
        try:
            await call.op()
            call.error = None
        except Exception as exc:
            call.error = exc
        finally:
            call.done.set()

    def _fail_pending_calls(self, receive: trio.MemoryReceiveChannel[_Message]) -> None:
        while True:
            try:
                message = receive.receive_nowait()
            except trio.WouldBlock:
                return
            if isinstance(message, _Call):
                message.error = SupervisorNotRunning(f"supervisor {self.name!r} stopped")
                message.done.set()

    def _find(self, child_id: str) -> _Child:
        for child in self._children:
            if child.spec.id == child_id:
                return child
        raise KeyError(child_id)

    async def _op_start_child(self, spec: ChildSpec) -> None:
        if any(c.spec.id == spec.id for c in self._children):
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        child = _Child(spec)
        self._children.append(child)
        error = await self._start(child)
        if error is not None:
            self._children.remove(child)
            raise ChildStartError(self.name, spec.id) from error

    async def _op_terminate_child(self, child_id: str) -> None:
        child = self._find(child_id)
        await self._stop(child)
        child.exit_pending = False  # a queued exit report must not restart it
        self._children.remove(child)

    async def _op_restart_child(self, child_id: str) -> None:
        child = self._find(child_id)
        await self._stop(child)
        child.history.clear()
        error = await self._start(child)
        if error is not None:
            raise ChildStartError(self.name, child_id) from error
