"""Scan files for secrets with detect-secrets, against the committed ``.secrets.baseline``."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from detect_secrets import SecretsCollection
from detect_secrets.settings import transient_settings

BASELINE_NAME: Final = ".secrets.baseline"


@dataclass(frozen=True)
class Finding:
    """One potential secret: where, which detector, and its hash (never the secret)."""

    filename: str
    line: int
    kind: str
    secret_hash: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.kind}"


def tracked_files(root: Path) -> list[str]:
    """Return the files git tracks under ``root`` (relative), the baseline left out."""
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True, text=True
    )
    return [name for name in out.stdout.split("\0") if name and name != BASELINE_NAME]


def load_baseline(root: Path) -> dict[str, Any]:
    """Return the committed baseline (settings and audited false positives)."""
    baseline: dict[str, Any] = json.loads((root / BASELINE_NAME).read_text())
    return baseline


def scan(root: Path, files: list[str], baseline: dict[str, Any]) -> list[Finding]:
    """Scan ``files`` (relative to ``root``) with the baseline's plugins and filters."""
    settings = {key: baseline[key] for key in ("plugins_used", "filters_used")}
    found: list[Finding] = []
    with transient_settings(settings):
        collection = SecretsCollection(root=str(root))
        for name in files:  # one by one: scan_files() forks a process pool
            collection.scan_file(name)
        for filename, secret in collection:
            line = secret.line_number or 0
            found.append(Finding(filename, line, secret.type, secret.secret_hash))
    return sorted(found, key=lambda f: (f.filename, f.line, f.kind))


def unaudited(found: list[Finding], baseline: dict[str, Any]) -> list[Finding]:
    """Return the findings that are not audited false positives of the baseline."""
    allowed = {
        (filename, entry["type"], entry["hashed_secret"])
        for filename, entries in baseline["results"].items()
        for entry in entries
        if entry.get("is_secret") is False
    }
    return [f for f in found if (f.filename, f.kind, f.secret_hash) not in allowed]
