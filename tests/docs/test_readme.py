"""Every Python example in README.md runs, and prints what the README says it prints.

A block that prints is followed by an HTML comment, ``<!-- output: ... -->``, holding its exact
output; the task-group example runs on trio as well as asyncio.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..support.processes import run_python

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = re.findall(
    r"```python\n(.*?)```\n(?:<!-- output:\n(.*?)-->\n)?",
    README.read_text(encoding="utf-8"),
    flags=re.S,
)


def run(code: str) -> str:
    return run_python("-c", code).stdout


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("code", "output"), EXAMPLES)
def test_readme_example_prints_what_the_readme_says(code, output):
    assert ("print(" in code) == bool(output), "a block that prints must state its output"
    assert run(code) == output


def test_task_group_example_runs_on_trio_too():
    (code, output) = next((c, o) for c, o in EXAMPLES if "anyio.run(main)" in c)
    assert run(code.replace("anyio.run(main)", 'anyio.run(main, backend="trio")')) == output
