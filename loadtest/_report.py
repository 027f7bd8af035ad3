"""What the benchmarks' reports share: the machine they ran on, table cells, the JSON record."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, object]:
    """Return the Python version, platform and CPU count of this machine, as a record has them."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 0,
    }


def cell(value: float | None, fmt: str = ",.1f") -> str:
    """Return ``value`` formatted for a table column, ``-`` when there is none."""
    return "-" if value is None else format(value, fmt)


def write_record(report: DataclassInstance, path: Path) -> None:
    """Write ``report`` to ``path`` as indented JSON (making its folder) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(f"wrote {path}")
