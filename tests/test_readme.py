"""Every Python example in README.md runs, and prints what the README says it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    out = run(BLOCKS[index])
    if "print(" in BLOCKS[index]:
        assert out == "1.0\n"


def test_task_group_example_runs_on_trio_too():
    (block,) = [b for b in BLOCKS if "anyio.run(main)" in b]
    assert run(block.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')) == "1.0\n"
