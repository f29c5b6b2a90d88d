"""Run the test suite the way CI does: on SQLite, then on PostgreSQL when there is one.

Tests that need a service (Redis, PostgreSQL, moto's S3 server, Chromium) skip,
saying why, when it is not there; with GENVAULT_REQUIRE_SERVICES=1 (CI) a skip
fails instead. The last line totals both passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "GENVAULT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
)
REQUIRE = os.environ.get("GENVAULT_REQUIRE_SERVICES") == "1"


def postgres_reachable(url: str) -> str | None:
    """None when reachable, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        dsn = url.replace("postgres://", "postgresql://", 1)
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"no PostgreSQL at {url} ({type(exc).__name__})"
    return None


def run_checks() -> int:
    """ruff and mypy first: the house style is part of what CI proves."""
    bin_dir = Path(sys.executable).parent
    commands = [
        [str(bin_dir / "ruff"), "check", "."],
        [str(bin_dir / "ruff"), "format", "--check", "."],
        [str(bin_dir / "mypy"), "config", "generations", "gallery", "storage_backends"],
    ]
    print("=== genvault checks: ruff and mypy ===", flush=True)
    for command in commands:
        code = subprocess.call(command, cwd=ROOT)  # noqa: S603 - our own tools
        if code != 0:
            print(f"FAILED: {Path(command[0]).name} {' '.join(command[1:])}")
            return code
    return 0


def run_pass(name: str, extra_env: dict[str, str], args: list[str], junit: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(extra_env)
    print(f"\n=== genvault tests: {name} pass ===", flush=True)
    command = [sys.executable, "-m", "pytest", f"--junitxml={junit}", *args]
    return subprocess.call(command, cwd=ROOT, env=env)  # noqa: S603 - our own pytest


def totals(junit: Path) -> tuple[int, int, int]:
    if not junit.exists():
        return 0, 1, 0
    root = ET.parse(junit).getroot()  # noqa: S314 - pytest wrote this file
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def main() -> int:
    args = sys.argv[1:]
    out = Path(tempfile.mkdtemp(prefix="genvault-junit-"))
    codes: list[int] = []
    passed = failed = skipped = 0
    if os.environ.get("GENVAULT_SKIP_CHECKS") != "1":
        codes.append(run_checks())

    code = run_pass("SQLite", {}, ["-m", "not postgres", *args], out / "sqlite.xml")
    codes.append(0 if code == 5 else code)
    p, f, s = totals(out / "sqlite.xml")
    passed, failed, skipped = passed + p, failed + f, skipped + s

    why_not = postgres_reachable(POSTGRES_URL)
    if why_not is None:
        code = run_pass("PostgreSQL", {"DATABASE_URL": POSTGRES_URL}, args, out / "postgres.xml")
        codes.append(0 if code == 5 else code)
        p, f, s = totals(out / "postgres.xml")
        passed, failed, skipped = passed + p, failed + f, skipped + s
    else:
        print(f"\nSKIPPED: the PostgreSQL pass: {why_not}")
        skipped += 1
        if REQUIRE:
            print("GENVAULT_REQUIRE_SERVICES=1: a skipped pass fails the run")
            codes.append(1)
            failed += 1

    print(f"\ntotal: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
