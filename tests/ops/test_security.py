"""Security checks of the code base: bandit, a secrets scan, no SQL built from strings,
ruff's security rules on (and every exemption justified)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.kit.metrics import ROOT
from tests.kit.secret_scan import load_baseline, scan, tracked_files, unaudited
from tests.kit.sqlcheck import check_source, check_tree

CODE = ("engine", "actors", "protocol")
BANDIT = Path(sys.executable).with_name("bandit")

PLANTED_SQL = """\
LIST = "SELECT id FROM orders WHERE account_id = $1 ORDER BY {}"

async def orders(conn, account, sort, status):
    await conn.fetch(f"SELECT * FROM orders WHERE account_id = '{account}'")
    await conn.fetch("SELECT * FROM orders ORDER BY %s" % sort)
    await conn.execute("DELETE FROM orders WHERE status = '{}'".format(status))
    query = "SELECT id FROM fills WHERE account_id = '" + account + "'"
    await conn.fetch(LIST.format(sort), account)
    listing = "SELECT id FROM orders ORDER BY "
    listing += sort
    return await conn.fetch(query)
"""

CLEAN_SQL = """\
QUERY = "SELECT * FROM orders WHERE account_id = $1 ORDER BY created_ts"
LONG = (
    "SELECT id FROM fills"
    " WHERE account_id = $1"
)
JOINED = "SELECT id " + "FROM accounts WHERE id = $1"

async def orders(conn, account, n):
    LOG.info(f"could not update {account}: {n} orders, where the snapshot was")
    LOG.info("select %s and order by hand", account)
    await conn.fetch(QUERY, account)
    return [f"{k}={v}" for k, v in account.items()]
"""


def _bandit(*targets: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [str(BANDIT), "-q", "-r", *targets, "--severity-level", "medium", "-f", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    report = json.loads(out.stdout)
    assert report["errors"] == []
    results: list[dict[str, object]] = report["results"]
    return results


def test_no_sql_is_built_from_strings() -> None:
    """engine/, actors/ and protocol/ build no SQL text from runtime strings."""
    assert check_tree(ROOT, CODE) == []


def test_sql_checker_reports_each_planted_query_with_its_line() -> None:
    """f-string, % formatting, .format(), + and += concatenation of SQL (literal or a name
    bound to one) are each reported."""
    assert check_source(PLANTED_SQL, "planted.py") == [
        "planted.py:4: SQL built by f-string",
        "planted.py:5: SQL built by % formatting",
        "planted.py:6: SQL built by .format()",
        "planted.py:7: SQL built by + concatenation",
        "planted.py:8: SQL built by .format()",
        "planted.py:10: SQL built by += concatenation",
    ]


def test_sql_checker_passes_static_parameterised_sql() -> None:
    """Static SQL with $n parameters, literal concatenation and English f-strings pass."""
    assert check_source(CLEAN_SQL, "clean.py") == []


def test_sql_checker_scans_files_of_a_tree(tmp_path: Path) -> None:
    """check_tree reads every module of the named packages, nested ones included."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "ok.py").write_text(CLEAN_SQL)
    (tmp_path / "pkg" / "sub" / "bad.py").write_text(PLANTED_SQL)
    found = check_tree(tmp_path, ("pkg",))
    assert len(found) == 6
    assert all(f.startswith("pkg/sub/bad.py:") for f in found)


@pytest.mark.slow
def test_bandit_finds_nothing_of_medium_or_high_severity() -> None:
    """bandit over engine/, actors/ and protocol/ reports no medium or high issue."""
    issues = [
        f"{r['filename']}:{r['line_number']}: {r['test_id']} {r['issue_text']}"
        for r in _bandit(*CODE)
    ]
    assert issues == []


@pytest.mark.slow
def test_bandit_reports_a_planted_issue(tmp_path: Path) -> None:
    """The bandit run as configured does catch a shell injection and unsafe YAML."""
    (tmp_path / "bad.py").write_text(
        "import subprocess\nimport yaml\n\n"
        "def run(cmd, text):\n"
        "    subprocess.call(cmd, shell=True)\n"
        "    return yaml.load(text)\n"
    )
    found = {r["test_id"] for r in _bandit(str(tmp_path))}
    assert {"B602", "B506"} <= found


@pytest.mark.slow
def test_no_secret_is_committed() -> None:
    """detect-secrets over every tracked file finds nothing but audited false positives."""
    baseline = load_baseline(ROOT)
    for filename, entries in baseline["results"].items():
        for entry in entries:
            assert entry.get("is_secret") is False, (
                f"{filename}:{entry['line_number']} is in .secrets.baseline but not audited"
                " as a false positive (detect-secrets audit .secrets.baseline)"
            )
    found = scan(ROOT, tracked_files(ROOT), baseline)
    assert [str(f) for f in unaudited(found, baseline)] == []


def test_secret_scan_reports_a_planted_secret(tmp_path: Path) -> None:
    """A private key and a cloud access key in a file are found; a clean file is not."""
    header = "-----BEGIN " + "RSA PRIVATE KEY-----"
    (tmp_path / "leak.txt").write_text(
        f"{header}\nMIIEowIBAAKCAQEA\n" + "aws_key = '" + "AKIA" + "Z7QWERTYUIOPASDF" + "'\n"
    )
    (tmp_path / "clean.py").write_text("PORT = 8081\nNAME = 'tickstream'\n")
    baseline = load_baseline(ROOT)
    found = scan(tmp_path, ["leak.txt", "clean.py"], baseline)
    assert {(f.filename, f.line, f.kind) for f in unaudited(found, baseline)} >= {
        ("leak.txt", 1, "Private Key"),
        ("leak.txt", 3, "AWS Access Key"),
    }
    assert all(f.filename == "leak.txt" for f in found)


def test_ruff_security_rules_are_on_and_every_exemption_says_why() -> None:
    """pyproject selects ruff's S rules; each `noqa: S...` in the code carries a reason."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    bare = re.compile(r"#\s*noqa:\s*S\d+(?:\s*,\s*S\d+)*\s*$")
    unexplained = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in (*CODE, "loadtest")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert unexplained == []
