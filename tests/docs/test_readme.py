"""Every Python example in README.md runs, and prints what the README says it prints.

A block that prints is followed by an HTML comment, ``<!-- output: ... -->``, holding its exact
output; the task-group example runs on trio as well as asyncio. The README's links into the
repository (docs/, examples/) point at files and headings that exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ..support.processes import run_python

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
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


def github_slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {github_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_the_readme_links_to_files_and_headings_that_exist():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^]]+\]: (\S+)$", text, re.M)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert sum(t.startswith("docs/") for t in local) >= 6  # the docs pages
    broken = []
    for target in local:
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        if not file.is_file() or (anchor and anchor not in headings(file)):
            broken.append(target)
    assert broken == []
