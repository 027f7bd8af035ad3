"""The public surface of ``protocol`` and its layering: exact exports, no upper-layer imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import protocol

PROTOCOL_DIR = Path(protocol.__file__).resolve().parent
REPO_ROOT = PROTOCOL_DIR.parent
SOURCES = sorted(PROTOCOL_DIR.glob("*.py"))

# The names protocol/__init__.py re-exports (STYLE rule 4). Adding or removing a public
# name must be a deliberate change of this list.
EXPECTED_EXPORTS = sorted(
    [
        "COMMANDS",
        "ControlCommand",
        "ControlError",
        "LOG_LEVELS",
        "parse_control_frame",
        "DecimalFormatError",
        "ErrorCode",
        "HTTP_STATUS",
        "Instrument",
        "InstrumentError",
        "OrderRequest",
        "ParsedSymbol",
        "ProtocolError",
        "RequestError",
        "Channel",
        "ChannelError",
        "ChannelKind",
        "StreamRequest",
        "parse_channel",
        "parse_stream_frame",
        "Tick",
        "TickError",
        "TradeRequest",
        "check_multiples",
        "dumps",
        "format_strike",
        "future_symbol",
        "loads",
        "option_symbol",
        "parse_count",
        "parse_decimal",
        "parse_instrument",
        "parse_order_request",
        "parse_symbol",
        "parse_symbol_name",
        "parse_ticks",
        "parse_trade_request",
    ]
)

# Packages protocol/ must never import: the layers above it, trio I/O, the web stack, drivers.
FORBIDDEN = frozenset(
    {
        "engine",
        "actors",
        "loadtest",
        "trio",
        "trio_websocket",
        "trio_asyncio",
        "quart",
        "quart_trio",
        "quart_schema",
        "hypercorn",
        "asyncpg",
        "redis",
        "psycopg",
        "sqlalchemy",
        "alembic",
        "asyncio",
    }
)
_TEXT_PATTERN = re.compile(
    r"^\s*(?:import|from)\s+(?:engine|actors|trio|quart|asyncpg|redis)\b", re.MULTILINE
)


def test_protocol_exports_exactly_its_public_names() -> None:
    """``protocol`` exposes exactly the expected public names, no more and no fewer."""
    assert sorted(n for n in dir(protocol) if not n.startswith("_")) == EXPECTED_EXPORTS


@pytest.mark.parametrize("name", EXPECTED_EXPORTS)
def test_each_export_is_defined_inside_protocol(name: str) -> None:
    """Every exported name comes from a protocol module (none is re-exported from elsewhere)."""
    value = getattr(protocol, name)
    module = getattr(value, "__module__", None)
    if module is not None and not isinstance(value, dict):
        assert module.startswith("protocol."), f"{name} comes from {module}"


def test_protocol_sources_are_found() -> None:
    """The layering scan below sees the package's modules (it would pass vacuously otherwise)."""
    names = {p.name for p in SOURCES}
    assert {"__init__.py", "_json.py", "_ticks.py", "_decimal.py", "_instruments.py"} <= names
    assert "_symbols.py" in names


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level > 1:  # reaching out of the package: '..engine' and the like
                found.add(f"{'.' * node.level}{node.module or ''}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_protocol_module_imports_nothing_from_upper_layers_or_io(path: Path) -> None:
    """No protocol module imports engine, actors, trio, quart, a database driver or redis."""
    imported = _imported_top_modules(path)
    assert not imported & FORBIDDEN, f"{path.name} imports {sorted(imported & FORBIDDEN)}"
    assert not [m for m in imported if m.startswith("..")], f"{path.name} leaves the package"
    assert not _TEXT_PATTERN.search(path.read_text(encoding="utf-8"))


def test_importing_protocol_loads_no_upper_layer_or_io_package() -> None:
    """A fresh interpreter importing every protocol module loads none of the forbidden packages."""
    modules = ["protocol", *(f"protocol.{p.stem}" for p in SOURCES if p.stem != "__init__")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(result.stdout.split())
    assert "protocol" in loaded
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
