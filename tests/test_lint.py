"""The linter is part of the suite: `ruff check` (configuration in pyproject.toml) must report nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = pytest.importorskip("ruff", reason="ruff is a test extra: pip install -e '.[test]'")
    exe = ruff.find_ruff_bin()
    out = subprocess.run([exe, "check", "--no-cache", "workbench", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"ruff check found problems (fix them or `ruff check --fix`):\n{out.stdout[-6000:]}"
