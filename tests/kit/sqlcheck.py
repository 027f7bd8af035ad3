"""Find SQL built from strings: f-strings, ``%``, ``.format`` and ``+`` on SQL text.

All SQL of the engine is static text with ``$n`` parameters; a query assembled from
runtime strings is how injection gets in. The checker reads the AST of a module and
reports ``file:line`` for every string-building expression whose literal parts contain a
SQL keyword.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Final

# Upper-case keywords are SQL by this codebase's convention; the multi-word forms are
# SQL in any case ("order by", "insert into"), while a lone lower-case "update" or
# "where" is usually English in a message.
SQL_KEYWORDS: Final = re.compile(
    r"\b(?:SELECT|INSERT|UPDATE|DELETE|WHERE|ORDER\s+BY|GROUP\s+BY|VALUES|RETURNING)\b"
    r"|\b(?i:select\s+[\w*,\s().]+\s+from|insert\s+into|delete\s+from|update\s+\w+\s+set"
    r"|order\s+by|group\s+by)\b"
)


def _literal_text(node: ast.AST, known: dict[str, str]) -> str:
    # The constant text an expression contributes (nested f-strings, concatenations, and
    # names bound to string literals in the same module).
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return known.get(node.id, "")
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v, known) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left, known) + " " + _literal_text(node.right, known)
    return ""


def _string_constants(tree: ast.AST) -> dict[str, str]:
    # NAME = "literal" (or a concatenation of literals) anywhere in the module.
    known: dict[str, str] = {}
    for node in ast.walk(tree):
        value = getattr(node, "value", None)
        if isinstance(node, ast.Assign | ast.AnnAssign) and value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if _is_static(value):
                for target in targets:
                    if isinstance(target, ast.Name):
                        known[target.id] = _literal_text(value, {})
    return known


def _is_static(node: ast.AST) -> bool:
    # A string known when the module is written: a literal or a concatenation of literals.
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_static(node.left) and _is_static(node.right)
    return False


def _finding(node: ast.AST, known: dict[str, str]) -> str | None:
    def is_sql(part: ast.AST) -> bool:
        return bool(SQL_KEYWORDS.search(_literal_text(part, known)))

    if isinstance(node, ast.JoinedStr) and any(
        isinstance(v, ast.FormattedValue) for v in node.values
    ):
        return "f-string" if is_sql(node) else None
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mod) and is_sql(node.left):
            return "% formatting"
        if isinstance(node.op, ast.Add) and not _is_static(node) and is_sql(node):
            return "+ concatenation"
    if (
        isinstance(node, ast.AugAssign)
        and isinstance(node.op, ast.Add)
        and is_sql(node.target)
        and not _is_static(node.value)
    ):
        return "+= concatenation"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and is_sql(node.func.value)
    ):
        return ".format()"
    return None


def check_source(source: str, filename: str = "<string>") -> list[str]:
    """Return ``file:line: how`` for every SQL text built from strings in ``source``."""
    tree = ast.parse(source, filename)
    known = _string_constants(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        how = _finding(node, known)
        if how is not None:
            found.append(f"{filename}:{getattr(node, 'lineno', 0)}: SQL built by {how}")
    return sorted(set(found), key=lambda f: (f.split(":")[0], int(f.split(":")[1])))


def check_tree(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Return the findings of :func:`check_source` over every module of ``packages``."""
    found: list[str] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found += check_source(path.read_text(), str(path.relative_to(root)))
    return found
