"""Validation of ``/ws/v1/control`` frames at the boundary (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import COMMANDS, ControlCommand, ControlError, parse_control_frame


def frame(cmd: object, args: object = None, **extra: Any) -> dict[str, Any]:
    """A command frame with id 7."""
    out: dict[str, Any] = {"op": "command", "id": 7, "cmd": cmd, **extra}
    if args is not None:
        out["args"] = args
    return out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (frame("stats"), ControlCommand(7, "stats")),
        (frame("stats", {}), ControlCommand(7, "stats")),
        (
            frame("account.halt", {"account": "ACC_1-x"}),
            ControlCommand(7, "account.halt", "ACC_1-x"),
        ),
        (
            frame("connection.kick", {"connection": 3}),
            ControlCommand(7, "connection.kick", connection=3),
        ),
        (frame("log.level", {"level": "debug"}), ControlCommand(7, "log.level", level="DEBUG")),
        ({"op": "command", "id": "a", "cmd": "feed.pause"}, ControlCommand("a", "feed.pause")),
        ({"op": "command", "cmd": "engine.drain"}, ControlCommand(None, "engine.drain")),
    ],
)
def test_valid_frames_parse(raw: dict[str, Any], expected: ControlCommand) -> None:
    """Every command with exactly its arguments is accepted, levels normalised."""
    assert parse_control_frame(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2], "JSON object"),
        ({"op": "subscribe", "id": 1}, "unknown op"),
        (frame("rm -rf"), "unknown command"),
        (frame(None), "unknown command"),
        (frame(5), "unknown command"),
        (frame("stats", [1]), "args must be an object"),
        (frame("stats", {"account": "ACC1"}), "takes no argument 'account'"),
        (frame("account.halt", {}), "needs the argument 'account'"),
        (frame("account.halt", {"account": "ACC1", "level": "INFO"}), "no argument 'level'"),
        (frame("account.halt", {"account": "'; DROP TABLE accounts; --"}), "account must"),
        (frame("account.halt", {"account": 12}), "account must"),
        (frame("account.halt", {"account": "A" * 33}), "account must"),
        (frame("connection.kick", {"connection": "3"}), "positive integer"),
        (frame("connection.kick", {"connection": True}), "positive integer"),
        (frame("connection.kick", {"connection": 0}), "positive integer"),
        (frame("connection.kick", {"connection": 1.5}), "positive integer"),
        (frame("log.level", {"level": "TRACE"}), "level must be one of"),
        (frame("log.level", {"level": None}), "level must be one of"),
        (frame("stats", extra_field=1), "unknown field"),
        ({"op": "command", "id": [1], "cmd": "stats"}, "id must be"),
        ({"op": "command", "id": True, "cmd": "stats"}, "id must be"),
    ],
)
def test_invalid_frames_are_refused(raw: object, message: str) -> None:
    """Unknown commands and unknown, missing or ill-typed arguments raise ControlError."""
    with pytest.raises(ControlError) as refused:
        parse_control_frame(raw)
    assert message in refused.value.message


def test_refusal_echoes_the_id_and_command() -> None:
    """A refused frame with a usable id and a known command keeps both for the answer."""
    with pytest.raises(ControlError) as refused:
        parse_control_frame(frame("account.halt", {"account": 1}))
    assert (refused.value.frame_id, refused.value.cmd) == (7, "account.halt")


def test_args_round_trip_as_on_the_wire() -> None:
    """``args()`` gives back the arguments that were given, and only those."""
    for cmd, wanted in COMMANDS.items():
        values: dict[str, object] = {"account": "ACC1", "connection": 2, "level": "INFO"}
        given = {k: values[k] for k in wanted}
        assert parse_control_frame(frame(cmd, given)).args() == given


def test_frame_is_the_wire_frame_that_parses_back() -> None:
    """``frame()`` gives the ``command`` frame as on the wire, and parsing it gives the command."""
    for cmd, wanted in COMMANDS.items():
        values: dict[str, object] = {"account": "ACC1", "connection": 2, "level": "INFO"}
        given = {k: values[k] for k in wanted}
        command = parse_control_frame(frame(cmd, given))
        assert command.frame() == {"op": "command", "id": 7, "cmd": cmd, "args": given}
        assert parse_control_frame(command.frame()) == command
    assert ControlCommand(None, "stats").frame() == {"op": "command", "cmd": "stats", "args": {}}
