"""The code base stays ruff- and mypy-clean (what `make lint typecheck` run), and deptry-clean."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run(str(BIN / "ruff"), "check", "services", "tests", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_runtime_import_is_a_declared_runtime_dependency() -> None:
    # deptry: an import that only the dev extra or another package's dependencies provide would
    # work here and crash in the image, which installs `dependencies` and the `stack` extra only.
    result = run(str(BIN / "deptry"), "services")
    assert result.returncode == 0, result.stdout + result.stderr
