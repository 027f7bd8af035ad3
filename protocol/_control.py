"""Frames of ``/ws/v1/control``: one ``command`` in, one ``result`` out.

``{"op": "command", "id": 1, "cmd": "...", "args": {...}}``; the arguments are named
``account``, ``connection`` and ``level``, and each command takes exactly the ones
listed in :data:`COMMANDS` (an unknown command, an unknown, missing or ill-typed
argument is a :class:`ControlError`, answered ``validation_failed``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ACCOUNT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_ID_LENGTH: Final = 64
MAX_CONNECTION_ID: Final = 2**53

# The arguments each command requires (no command takes optional ones).
COMMANDS: Final[Mapping[str, frozenset[str]]] = {
    "stats": frozenset(),
    "accounts.list": frozenset(),
    "account.restart": frozenset({"account"}),
    "account.halt": frozenset({"account"}),
    "account.resume": frozenset({"account"}),
    "feed.pause": frozenset(),
    "feed.resume": frozenset(),
    "connections.list": frozenset(),
    "connection.kick": frozenset({"connection"}),
    "engine.drain": frozenset(),
    "log.level": frozenset({"level"}),
}


class ControlError(ValueError):
    """A control frame that cannot be executed; ``frame_id`` is echoed when usable."""

    def __init__(self, message: str, frame_id: int | str | None = None, cmd: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.frame_id = frame_id
        self.cmd = cmd


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """A validated command: its id, name and arguments."""

    id: int | str | None
    cmd: str
    account: str | None = None
    connection: int | None = None
    level: str | None = None

    def args(self) -> dict[str, object]:
        """Return the arguments that were given, as on the wire."""
        out: dict[str, object] = {}
        if self.account is not None:
            out["account"] = self.account
        if self.connection is not None:
            out["connection"] = self.connection
        if self.level is not None:
            out["level"] = self.level
        return out

    def frame(self) -> dict[str, object]:
        """Return the ``command`` frame that carries this command, as on the wire."""
        out: dict[str, object] = {"op": "command"}
        if self.id is not None:
            out["id"] = self.id
        out["cmd"] = self.cmd
        out["args"] = self.args()
        return out


def _frame_id(frame: Mapping[str, object]) -> int | str | None:
    value = frame.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        return None
    return value


def parse_control_frame(frame: object) -> ControlCommand:
    """Validate one decoded control frame.

    Raises:
        ControlError: the frame, the command or an argument is not valid.
    """
    if not isinstance(frame, dict):
        raise ControlError("frame must be a JSON object")
    frame_id = _frame_id(frame)
    if "id" in frame and frame_id is None:
        raise ControlError("id must be an integer or a short string")
    if frame.get("op") != "command":
        raise ControlError(f"unknown op {str(frame.get('op'))[:32]!r}", frame_id)
    extra = sorted(set(frame) - {"op", "id", "cmd", "args"})
    if extra:
        raise ControlError(f"unknown field {extra[0][:32]!r}", frame_id)
    cmd = frame.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise ControlError(f"unknown command {str(cmd)[:32]!r}", frame_id)
    args = frame.get("args", {})
    if not isinstance(args, dict):
        raise ControlError("args must be an object", frame_id, cmd)
    wanted = COMMANDS[cmd]
    unknown = sorted(set(args) - wanted)
    if unknown:
        raise ControlError(f"{cmd} takes no argument {unknown[0][:32]!r}", frame_id, cmd)
    missing = sorted(wanted - set(args))
    if missing:
        raise ControlError(f"{cmd} needs the argument {missing[0]!r}", frame_id, cmd)
    return ControlCommand(
        frame_id,
        cmd,
        account=_account(args, frame_id, cmd),
        connection=_connection(args, frame_id, cmd),
        level=_level(args, frame_id, cmd),
    )


def _account(args: Mapping[str, object], frame_id: int | str | None, cmd: str) -> str | None:
    if "account" not in args:
        return None
    value = args["account"]
    if not isinstance(value, str) or not ACCOUNT_RE.fullmatch(value):
        raise ControlError("account must match [A-Za-z0-9_-]{1,32}", frame_id, cmd)
    return value


def _connection(args: Mapping[str, object], frame_id: int | str | None, cmd: str) -> int | None:
    if "connection" not in args:
        return None
    value = args["connection"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_CONNECTION_ID:
        raise ControlError("connection must be a positive integer", frame_id, cmd)
    return value


def _level(args: Mapping[str, object], frame_id: int | str | None, cmd: str) -> str | None:
    if "level" not in args:
        return None
    value = args["level"]
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ControlError(f"level must be one of {', '.join(LOG_LEVELS)}", frame_id, cmd)
    return value.upper()
