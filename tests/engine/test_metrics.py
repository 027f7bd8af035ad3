"""Metrics: supervisor events are counted in the engine's own registry."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine.metrics import Metrics
from engine.supervisor import ChildSpec, Restart, Supervisor, SupervisorEscalation


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_restarts_and_escalation_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    """Each restart of a crashing child and the final escalation show in the metrics."""
    metrics = Metrics()

    async def crash(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        raise RuntimeError("boom")

    sup = Supervisor(
        "root",
        [ChildSpec("feed", crash, restart=Restart.PERMANENT)],
        intensity=2,
        period=10,
        on_event=metrics.observe_supervisor,
    )
    with pytest.raises(SupervisorEscalation):
        await sup.run()
    assert _value(metrics, "tickstream_actor_restarts_total", supervisor="root", child="feed") == 2
    assert _value(metrics, "tickstream_supervisor_escalations_total", supervisor="root") == 1
    assert trio.current_time() == 3


async def test_quarantine_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    """A child past its own budget is given up and counted as quarantined; siblings run on."""
    metrics = Metrics()
    given_up: list[str] = []

    async def crash(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        raise RuntimeError("bad account")

    async def steady(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor(
        "accounts",
        [
            ChildSpec(
                "ACC1",
                crash,
                restart=Restart.TRANSIENT,
                max_restarts=1,
                max_period=60,
                on_give_up=lambda cid, _err: given_up.append(cid),
            ),
            ChildSpec("ACC2", steady),
        ],
        intensity=5,
        period=60,
        on_event=metrics.observe_supervisor,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        assert given_up == ["ACC1"]
        assert (
            _value(
                metrics, "tickstream_actor_quarantines_total", supervisor="accounts", child="ACC1"
            )
            == 1
        )
        states = {c.id: c.state.name for c in sup.children()}
        assert states == {"ACC1": "GIVEN_UP", "ACC2": "RUNNING"}
        nursery.cancel_scope.cancel()
