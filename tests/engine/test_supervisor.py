"""Tests for engine.supervisor: OTP restart semantics, shutdown and dynamic children.

All timing runs on pytest-trio's ``autojump_clock`` (a MockClock with threshold 0): the
times asserted below are exact virtual seconds.
"""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from engine.supervisor import (
    BRUTAL,
    ChildInfo,
    ChildSpec,
    ChildStartError,
    ChildState,
    EventKind,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
    SupervisorNotRunning,
)

BUDGET = 100  # virtual seconds any test may take before it counts as hung


class Boom(Exception):
    """A child's deliberate crash."""


class Worker:
    """A scripted child service that records what happens to it, with virtual times.

    ``lifetimes[n]`` is how long the n-th run lives before it crashes (or returns when
    ``normal``); runs without an entry live until stopped. The first ``start_failures``
    runs raise before ``task_status.started()``.
    """

    def __init__(
        self,
        log: list[tuple[str, str, float]],
        name: str,
        *,
        lifetimes: tuple[float, ...] = (),
        normal: bool = False,
        start_failures: int = 0,
        startup: float = 0.0,
        cleanup: float = 0.0,
        obey_stop: bool = True,
    ) -> None:
        self.log = log
        self.name = name
        self.lifetimes = lifetimes
        self.normal = normal
        self.start_failures = start_failures
        self.startup = startup
        self.cleanup = cleanup
        self.obey_stop = obey_stop
        self.runs = 0
        self.alive = 0
        self.stop_calls = 0
        self._stop_event = trio.Event()

    def note(self, what: str) -> None:
        self.log.append((what, self.name, trio.current_time()))

    def spec(self, **kwargs: object) -> ChildSpec:
        return ChildSpec(self.name, self.run, **kwargs)  # type: ignore[arg-type]

    def request_stop(self) -> None:
        self.stop_calls += 1
        self._stop_event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        run = self.runs
        self.runs += 1
        await trio.sleep(self.startup)
        if run < self.start_failures:
            self.note("start-failed")
            raise Boom(f"{self.name} start {run}")
        self._stop_event = trio.Event()
        self.alive += 1
        try:
            self.note("start")
            task_status.started()
            with trio.move_on_after(self.lifetimes[run] if run < len(self.lifetimes) else math.inf):
                if self.obey_stop:
                    await self._stop_event.wait()
                else:
                    await trio.sleep_forever()
            if self._stop_event.is_set() and self.obey_stop:
                self.note("stopped-gracefully")
                return
            if self.normal:
                self.note("exit")
                return
            self.note("crash")
            raise Boom(f"{self.name} run {run}")
        except trio.Cancelled:
            self.note("cancelled")
            with trio.CancelScope(shield=True):
                await trio.sleep(self.cleanup)
            raise
        finally:
            self.alive -= 1


def what(log: list[tuple[str, str, float]]) -> list[tuple[str, str]]:
    return [(event, name) for event, name, _ in log]


def live_tasks() -> int:
    """Count every task of the current trio run, walking down from the root task."""
    count, stack = 0, [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        stack.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return count


async def test_children_start_in_order_each_ready_before_the_next(autojump_clock):
    """Children start one after another, each after the previous reported started."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, name, startup=1.0) for name in "abc"]
    sup = Supervisor("root", [w.spec() for w in workers])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(sup.run) is sup
            assert trio.current_time() == 3.0
            assert log == [("start", "a", 1.0), ("start", "b", 2.0), ("start", "c", 3.0)]
            assert [c.state for c in sup.children()] == [ChildState.RUNNING] * 3
            sup.stop()
    assert what(log)[3:] == [("cancelled", "c"), ("cancelled", "b"), ("cancelled", "a")]


async def test_crash_loop_restarts_the_child_and_counts_restarts(autojump_clock):
    """A child crashing repeatedly within the intensity is restarted every time."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(1, 1, 1))
    events: list[SupervisorEvent] = []
    sup = Supervisor("root", [w.spec()], intensity=3, period=5, on_event=events.append)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(10)
            assert sup.children() == [ChildInfo("a", ChildState.RUNNING, 3, repr(Boom("a run 2")))]
            sup.stop()
    assert log == [
        ("start", "a", 0),
        ("crash", "a", 1),
        ("start", "a", 1),
        ("crash", "a", 2),
        ("start", "a", 2),
        ("crash", "a", 3),
        ("start", "a", 3),
        ("cancelled", "a", 10),
    ]
    assert sup.statistics().restarts == 3
    kinds = [e.kind for e in events]
    assert kinds[:4] == [
        EventKind.STARTED,
        EventKind.EXITED,
        EventKind.RESTARTED,
        EventKind.STARTED,
    ]
    assert events[1].requested is False
    assert isinstance(events[1].error, Boom)
    assert events[-1].kind is EventKind.EXITED
    assert events[-1].requested is True


async def test_intensity_exceeded_escalates_with_last_error_chained(autojump_clock):
    """More than `intensity` restarts within `period` stops all children and escalates."""
    log: list[tuple[str, str, float]] = []
    a, b, c = Worker(log, "a"), Worker(log, "b", lifetimes=(1, 1, 1, 1)), Worker(log, "c")
    events: list[SupervisorEvent] = []
    sup = Supervisor(
        "root", [a.spec(), b.spec(), c.spec()], intensity=3, period=5, on_event=events.append
    )
    with trio.fail_after(BUDGET), pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert trio.current_time() == 4.0
    assert info.value.supervisor == "root"
    assert info.value.child_id == "b"
    assert isinstance(info.value.__cause__, Boom)
    assert str(info.value.__cause__) == "b run 3"
    assert log[-3:] == [("crash", "b", 4), ("cancelled", "c", 4), ("cancelled", "a", 4)]
    assert a.alive == b.alive == c.alive == 0
    assert EventKind.ESCALATED in [e.kind for e in events]
    assert [c.state for c in sup.children()] == [ChildState.STOPPED] * 3


async def test_crashes_spread_beyond_the_period_do_not_escalate(autojump_clock):
    """Restarts older than `period` no longer count against the intensity."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(6, 6, 6, 6))
    sup = Supervisor("root", [w.spec()], intensity=1, period=5)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(30)
            assert sup.children()[0].state is ChildState.RUNNING
            assert sup.children()[0].restarts == 4
            sup.stop()
    assert [t for event, _, t in log if event == "crash"] == [6, 12, 18, 24]


async def test_a_restart_exactly_one_period_old_has_expired(autojump_clock):
    """Crashes exactly `period` apart never exceed an intensity of one."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(5, 5, 5))
    sup = Supervisor("root", [w.spec()], intensity=1, period=5)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(20)
            assert sup.children()[0].restarts == 3
            sup.stop()


@pytest.mark.parametrize(
    ("restart", "normal", "restarted"),
    [
        (Restart.PERMANENT, False, True),
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, False, True),
        (Restart.TRANSIENT, True, False),
        (Restart.TEMPORARY, False, False),
        (Restart.TEMPORARY, True, False),
    ],
)
async def test_restart_type_decides_whether_an_exited_child_restarts(
    autojump_clock, restart, normal, restarted
):
    """Permanent always, transient only after a crash, temporary never restarts."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(1,), normal=normal)
    sup = Supervisor("root", [w.spec(restart=restart)])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(5)
            [info] = sup.children()
            assert w.runs == (2 if restarted else 1)
            assert info.state is (ChildState.RUNNING if restarted else ChildState.STOPPED)
            assert info.last_error == (None if normal else repr(Boom("a run 0")))
            sup.stop()


async def test_one_for_one_restarts_only_the_failed_child(autojump_clock):
    """one_for_one leaves the siblings of a crashed child alone."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, "a"), Worker(log, "b", lifetimes=(1,)), Worker(log, "c")]
    sup = Supervisor("root", [w.spec() for w in workers], strategy=Strategy.ONE_FOR_ONE)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            sup.stop()
    assert what(log) == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("crash", "b"),
        ("start", "b"),
        ("cancelled", "c"),
        ("cancelled", "b"),
        ("cancelled", "a"),
    ]


async def test_one_for_all_stops_others_in_reverse_then_restarts_all_in_order(autojump_clock):
    """one_for_all stops every other child in reverse order and starts all in order."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, "a"), Worker(log, "b", lifetimes=(1,)), Worker(log, "c")]
    sup = Supervisor("root", [w.spec() for w in workers], strategy=Strategy.ONE_FOR_ALL)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            assert [c.restarts for c in sup.children()] == [1, 1, 1]
            sup.stop()
    assert what(log)[3:9] == [
        ("crash", "b"),
        ("cancelled", "c"),
        ("cancelled", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
    ]


async def test_rest_for_one_restarts_the_failed_child_and_those_after_it(autojump_clock):
    """rest_for_one stops the later children in reverse and restarts from the failed one."""
    log: list[tuple[str, str, float]] = []
    names = ("a", "b", "c", "d")
    workers = [Worker(log, n, lifetimes=(1,) if n == "b" else ()) for n in names]
    sup = Supervisor("root", [w.spec() for w in workers], strategy=Strategy.REST_FOR_ONE)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            assert [c.restarts for c in sup.children()] == [0, 1, 1, 1]
            sup.stop()
    assert what(log)[4:10] == [
        ("crash", "b"),
        ("cancelled", "d"),
        ("cancelled", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]


async def test_one_for_all_stops_a_temporary_sibling_without_restarting_it(autojump_clock):
    """A temporary sibling is stopped by a group restart and stays stopped."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a", lifetimes=(1,)), Worker(log, "b")
    sup = Supervisor(
        "root", [a.spec(), b.spec(restart=Restart.TEMPORARY)], strategy=Strategy.ONE_FOR_ALL
    )
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            assert [c.state for c in sup.children()] == [ChildState.RUNNING, ChildState.STOPPED]
            sup.stop()
    assert what(log)[2:5] == [("crash", "a"), ("cancelled", "b"), ("start", "a")]


async def test_siblings_crashing_together_cost_one_group_restart(autojump_clock):
    """A sibling whose crash is still queued restarts with the group, spending no budget."""
    log: list[tuple[str, str, float]] = []
    a, b, c = Worker(log, "a", lifetimes=(1,)), Worker(log, "b", lifetimes=(1,)), Worker(log, "c")
    sup = Supervisor(
        "root", [a.spec(), b.spec(), c.spec()], strategy=Strategy.ONE_FOR_ALL, intensity=1
    )
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            sup.stop()
    # Both crash at t=1; trio may schedule either first.
    assert sorted(what(log)[3:5]) == [("crash", "a"), ("crash", "b")]
    assert what(log)[5:9] == [
        ("cancelled", "c"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
    ]
    assert (a.runs, b.runs, c.runs) == (2, 2, 2)


async def test_stop_shuts_down_in_reverse_order_honouring_each_deadline(autojump_clock):
    """stop() stops children one at a time in reverse: hook, deadline, cancel."""
    log: list[tuple[str, str, float]] = []
    a = Worker(log, "a")  # honours its stop hook
    b = Worker(log, "b", obey_stop=False)  # ignores its stop hook
    c = Worker(log, "c")  # no hook: cancelled at once
    sup = Supervisor(
        "root",
        [
            a.spec(stop=a.request_stop, shutdown=10.0),
            b.spec(stop=b.request_stop, shutdown=2.5),
            c.spec(),
        ],
    )
    with trio.fail_after(BUDGET):
        await trio.sleep(1)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
            sup.stop()  # idempotent
    assert trio.current_time() == 3.5
    assert log[3:] == [
        ("cancelled", "c", 1.0),
        ("cancelled", "b", 3.5),
        ("stopped-gracefully", "a", 3.5),
    ]
    assert (a.stop_calls, b.stop_calls) == (1, 1)
    assert [c.state for c in sup.children()] == [ChildState.STOPPED] * 3


async def test_brutal_shutdown_cancels_at_once_without_calling_the_hook(autojump_clock):
    """BRUTAL skips the stop hook and the grace period."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a")
    sup = Supervisor("root", [w.spec(stop=w.request_stop, shutdown=BRUTAL)])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(1)
            sup.stop()
    assert log == [("start", "a", 0), ("cancelled", "a", 1)]
    assert w.stop_calls == 0


async def test_slow_shielded_cleanup_is_awaited_and_logged(autojump_clock, caplog):
    """A child still cleaning up past its grace is waited for, with a warning."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", cleanup=3.0)
    sup = Supervisor("root", [w.spec(shutdown=1.0)])
    with trio.fail_after(BUDGET), caplog.at_level(logging.WARNING, "engine.supervisor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
    assert trio.current_time() == 3.0
    assert w.alive == 0
    assert "still cleaning up" in caplog.text


async def test_a_failing_stop_hook_falls_back_to_cancellation(autojump_clock, caplog):
    """A stop hook that raises is logged and the child is cancelled at once."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a")

    def broken_hook() -> None:
        raise RuntimeError("hook broke")

    sup = Supervisor("root", [w.spec(stop=broken_hook, shutdown=5.0)])
    with trio.fail_after(BUDGET), caplog.at_level(logging.ERROR, "engine.supervisor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
    assert trio.current_time() == 0
    assert log[-1] == ("cancelled", "a", 0)
    assert "stop hook" in caplog.text


async def test_start_failure_counts_as_a_crash_and_is_retried(autojump_clock):
    """A child failing before started() is restarted; one_for_one siblings still start."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a", start_failures=2), Worker(log, "b")
    events: list[SupervisorEvent] = []
    sup = Supervisor("root", [a.spec(), b.spec()], on_event=events.append)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert what(log) == [
                ("start-failed", "a"),
                ("start", "b"),
                ("start-failed", "a"),
                ("start", "a"),
            ]
            assert sup.children()[0] == ChildInfo(
                "a", ChildState.RUNNING, 2, repr(Boom("a start 1"))
            )
            assert [e.kind for e in events].count(EventKind.START_FAILED) == 2
            sup.stop()


async def test_start_failure_under_rest_for_one_starts_the_rest_after_the_retry(autojump_clock):
    """Under rest_for_one a start failure holds back later children until it starts."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, "a"), Worker(log, "b", start_failures=1), Worker(log, "c")]
    sup = Supervisor("root", [w.spec() for w in workers], strategy=Strategy.REST_FOR_ONE)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert what(log) == [
                ("start", "a"),
                ("start-failed", "b"),
                ("start", "b"),
                ("start", "c"),
            ]
            sup.stop()


async def test_temporary_start_failure_does_not_hold_back_later_children(autojump_clock):
    """A temporary child that fails to start is dropped and the sequence goes on."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a", start_failures=1), Worker(log, "b")
    sup = Supervisor(
        "root", [a.spec(restart=Restart.TEMPORARY), b.spec()], strategy=Strategy.ONE_FOR_ALL
    )
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert what(log) == [("start-failed", "a"), ("start", "b")]
            assert [c.state for c in sup.children()] == [ChildState.STOPPED, ChildState.RUNNING]
            sup.stop()


async def test_start_failures_past_the_intensity_escalate_before_started(autojump_clock):
    """A child that never starts makes run() escalate instead of reporting started."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", start_failures=100)
    sup = Supervisor("root", [w.spec()], intensity=2)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            with pytest.raises(SupervisorEscalation) as info:
                await nursery.start(sup.run)
    # The first start and `intensity` restarts fail; the next restart would exceed it.
    assert w.runs == 3
    assert str(info.value.__cause__) == "a start 2"


async def test_escalating_child_supervisor_is_restarted_by_its_parent(autojump_clock):
    """A nested supervisor past its intensity escalates; its parent restarts it."""
    log: list[tuple[str, str, float]] = []
    x, y = Worker(log, "x", lifetimes=(1,)), Worker(log, "y")
    sub = Supervisor("sub", [x.spec(), y.spec()], intensity=0)
    parent = Supervisor("parent", [sub.as_child()], intensity=3)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(parent.run)
            await trio.sleep(2)
            [info] = parent.children()
            assert info.state is ChildState.RUNNING
            assert info.restarts == 1
            assert info.last_error is not None
            assert "SupervisorEscalation" in info.last_error
            parent.stop()
    assert log == [
        ("start", "x", 0),
        ("start", "y", 0),
        ("crash", "x", 1),
        ("cancelled", "y", 1),
        ("start", "x", 1),
        ("start", "y", 1),
        ("cancelled", "y", 2),
        ("cancelled", "x", 2),
    ]


async def test_start_child_waits_until_started_and_rejects_duplicates(autojump_clock):
    """start_child appends a child, returns once it started, and refuses a taken id."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a"), Worker(log, "b", startup=2.0)
    sup = Supervisor("accounts", [a.spec()])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.start_child(b.spec())
            assert trio.current_time() == 2.0
            assert [(c.id, c.state) for c in sup.children()] == [
                ("a", ChildState.RUNNING),
                ("b", ChildState.RUNNING),
            ]
            with pytest.raises(ValueError, match="already has a child 'b'"):
                await sup.start_child(Worker(log, "b").spec())
            sup.stop()
    assert what(log)[-2:] == [("cancelled", "b"), ("cancelled", "a")]


async def test_start_child_that_fails_to_start_is_reported_and_not_added(autojump_clock):
    """A dynamic child failing before started() raises ChildStartError and is dropped."""
    log: list[tuple[str, str, float]] = []
    sup = Supervisor("accounts")
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with pytest.raises(ChildStartError) as info:
                await sup.start_child(Worker(log, "x", start_failures=1).spec())
            assert isinstance(info.value.__cause__, Boom)
            assert sup.children() == []
            sup.stop()


async def test_terminate_child_awaits_its_end_and_removes_it(autojump_clock):
    """terminate_child returns only after the child's cleanup finished, then forgets it."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a"), Worker(log, "b", cleanup=1.5)
    sup = Supervisor("accounts", [a.spec(), b.spec()])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.terminate_child("b")
            assert trio.current_time() == 1.5
            assert b.alive == 0
            assert [c.id for c in sup.children()] == ["a"]
            with pytest.raises(KeyError):
                await sup.terminate_child("b")
            sup.stop()


async def test_restart_child_stops_then_starts_it_again(autojump_clock):
    """restart_child stops a running child and starts it again in place."""
    log: list[tuple[str, str, float]] = []
    a, b = Worker(log, "a"), Worker(log, "b")
    sup = Supervisor("accounts", [a.spec(), b.spec()])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await sup.restart_child("a")
            assert what(log)[2:] == [("cancelled", "a"), ("start", "a")]
            assert [(c.id, c.restarts) for c in sup.children()] == [("a", 1), ("b", 0)]
            with pytest.raises(KeyError):
                await sup.restart_child("zz")
            sup.stop()


async def test_restart_child_that_fails_to_start_is_left_stopped(autojump_clock):
    """restart_child raises ChildStartError when the new start fails."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(1,), normal=True, start_failures=0)
    sup = Supervisor("accounts", [w.spec(restart=Restart.TRANSIENT)])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            w.start_failures = 5
            with pytest.raises(ChildStartError):
                await sup.restart_child("a")
            assert sup.children()[0].state is ChildState.STOPPED
            sup.stop()


async def test_child_over_its_own_budget_is_given_up_while_siblings_run(autojump_clock):
    """A child past its own budget is quarantined and on_give_up is called; no escalation."""
    log: list[tuple[str, str, float]] = []
    acc1, acc2 = Worker(log, "acc1", lifetimes=(1, 1, 1)), Worker(log, "acc2")
    gave_up: list[tuple[str, BaseException | None, float]] = []
    spec1 = acc1.spec(
        max_restarts=2,
        max_period=10.0,
        on_give_up=lambda cid, err: gave_up.append((cid, err, trio.current_time())),
    )
    sup = Supervisor("accounts", [spec1, acc2.spec()], intensity=5, period=5)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(10)
            [(cid, err, when)] = gave_up
            assert (cid, str(err), when) == ("acc1", "acc1 run 2", 3.0)
            assert [c.state for c in sup.children()] == [
                ChildState.GIVEN_UP,
                ChildState.RUNNING,
            ]
            stats = sup.statistics()
            assert (stats.given_up, stats.running, stats.restarts) == (1, 1, 2)
            assert acc2.runs == 1
            await sup.restart_child("acc1")
            assert sup.children()[0].state is ChildState.RUNNING
            sup.stop()


async def test_external_cancellation_propagates_and_leaves_no_task(autojump_clock):
    """Cancelling run() from outside cancels every child and is never swallowed."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, n) for n in "abc"]
    workers[0].cleanup = 1.0
    sup = Supervisor("root", [w.spec(stop=w.request_stop) for w in workers])
    returned = False
    tasks_before = live_tasks()
    with trio.fail_after(BUDGET), trio.move_on_after(5) as scope:
        await sup.run()
        returned = True
    assert scope.cancelled_caught
    assert not returned
    assert trio.current_time() == 6.0  # a's shielded cleanup ran to its end
    assert sorted(what(log)[3:]) == [("cancelled", n) for n in "abc"]
    assert [w.alive for w in workers] == [0, 0, 0]
    assert live_tasks() == tasks_before
    assert [w.stop_calls for w in workers] == [0, 0, 0]
    assert [c.state for c in sup.children()] == [ChildState.STOPPED] * 3
    with pytest.raises(SupervisorNotRunning):
        await sup.start_child(Worker(log, "d").spec())


async def test_a_child_nursery_crash_is_a_crash_and_its_stop_is_clean(autojump_clock):
    """An ExceptionGroup from a child's own nursery is a crash; being stopped is not."""
    events: list[SupervisorEvent] = []
    runs = 0

    async def service(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            task_status.started()
            if runs == 1:
                await trio.sleep(1)
                raise Boom("inner")

    sup = Supervisor("root", [ChildSpec("svc", service)], on_event=events.append)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            sup.stop()
    exits = [e for e in events if e.kind is EventKind.EXITED]
    assert isinstance(exits[0].error, ExceptionGroup)
    assert exits[0].requested is False
    assert (exits[1].error, exits[1].requested) == (None, True)
    assert runs == 2


async def test_a_child_that_crashes_right_after_started_is_restarted(autojump_clock):
    """A crash before the child's first checkpoint after started() is still seen."""
    runs = 0

    async def service(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()
        if runs == 1:
            raise Boom("at once")
        await trio.sleep_forever()

    sup = Supervisor("root", [ChildSpec("svc", service)])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.testing.wait_all_tasks_blocked()
            assert runs == 2
            assert sup.children()[0].state is ChildState.RUNNING
            sup.stop()


async def test_a_child_returning_without_started_is_a_start_failure(autojump_clock):
    """A child that returns before task_status.started() failed to start."""

    async def lazy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        return

    sup = Supervisor("root", [ChildSpec("lazy", lazy)], intensity=0)
    with trio.fail_after(BUDGET), pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_calls_fail_when_the_supervisor_is_not_running(autojump_clock):
    """Dynamic-child calls raise SupervisorNotRunning before run() and after stop()."""
    log: list[tuple[str, str, float]] = []
    sup = Supervisor("root")
    with pytest.raises(SupervisorNotRunning):
        await sup.terminate_child("a")
    sup.stop()  # no-op when not running
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            sup.stop()
            with pytest.raises(SupervisorNotRunning):
                await sup.start_child(Worker(log, "late").spec())
    assert log == []


async def test_on_event_hook_errors_are_logged_and_supervision_goes_on(autojump_clock, caplog):
    """A failing on_event hook never disturbs supervision."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a", lifetimes=(1,))

    def broken(event: SupervisorEvent) -> None:
        raise RuntimeError("metrics down")

    sup = Supervisor("root", [w.spec()], on_event=broken)
    with trio.fail_after(BUDGET), caplog.at_level(logging.ERROR, "engine.supervisor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            assert w.runs == 2
            sup.stop()
    assert "on_event hook failed" in caplog.text


async def test_statistics_count_children_by_state(autojump_clock):
    """statistics() counts children per state and restarts of the current run."""
    log: list[tuple[str, str, float]] = []
    a = Worker(log, "a", lifetimes=(1,), normal=True)
    b = Worker(log, "b", lifetimes=(1,))
    sup = Supervisor("root", [a.spec(restart=Restart.TEMPORARY), b.spec()])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            stats = sup.statistics()
            assert (stats.name, stats.children, stats.running, stats.stopped) == ("root", 2, 1, 1)
            assert (stats.starting, stats.stopping, stats.given_up, stats.restarts) == (0, 0, 0, 1)
            sup.stop()


async def test_a_supervisor_cannot_run_twice_at_once(autojump_clock):
    """A second concurrent run() is refused; a later run starts afresh."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "a")
    sup = Supervisor("root", [w.spec()])
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with pytest.raises(RuntimeError, match="already running"):
                await sup.run()
            sup.stop()
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert w.runs == 2
            assert sup.children()[0].restarts == 0
            sup.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": ""},
        {"shutdown": -1.0},
        {"max_restarts": 1},
        {"max_period": 1.0},
        {"max_restarts": -1, "max_period": 1.0},
        {"max_restarts": 1, "max_period": 0.0},
    ],
)
def test_child_spec_rejects_invalid_values(kwargs):
    """ChildSpec validates id, shutdown and the per-child budget."""
    fields: dict[str, object] = {"id": "a", "start": trio.sleep_forever, **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ChildSpec(**fields)  # type: ignore[arg-type]


def test_supervisor_rejects_duplicate_ids_and_bad_budgets():
    """Supervisor refuses duplicate child ids, negative intensity and empty periods."""
    spec = ChildSpec("a", trio.sleep_forever)
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor("root", [spec, spec])
    with pytest.raises(ValueError, match="intensity"):
        Supervisor("root", intensity=-1)
    with pytest.raises(ValueError, match="period"):
        Supervisor("root", period=0)


async def test_stop_during_the_initial_start_skips_the_remaining_children(autojump_clock):
    """stop() while children are starting lets the current one finish, starts no more."""
    log: list[tuple[str, str, float]] = []
    workers = [Worker(log, name, startup=1.0) for name in "abc"]
    sup = Supervisor("root", [w.spec() for w in workers])

    async def stop_soon() -> None:
        await trio.sleep(1.5)
        sup.stop()

    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_soon)
            await nursery.start(sup.run)
    assert log == [
        ("start", "a", 1.0),
        ("start", "b", 2.0),
        ("cancelled", "b", 2.0),
        ("cancelled", "a", 2.0),
    ]
    assert workers[2].runs == 0


async def test_a_failing_give_up_hook_is_logged_and_the_child_stays_given_up(
    autojump_clock, caplog
):
    """An on_give_up hook that raises does not disturb the supervisor."""
    log: list[tuple[str, str, float]] = []
    w = Worker(log, "acc", lifetimes=(1,))

    def broken(child_id: str, error: BaseException | None) -> None:
        raise RuntimeError("alerting down")

    spec = w.spec(max_restarts=0, max_period=10.0, on_give_up=broken)
    sup = Supervisor("accounts", [spec])
    with trio.fail_after(BUDGET), caplog.at_level(logging.ERROR, "engine.supervisor"):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(2)
            assert sup.children()[0].state is ChildState.GIVEN_UP
            sup.stop()
    assert "on_give_up hook" in caplog.text
    assert sup.children()[0].state is ChildState.GIVEN_UP
