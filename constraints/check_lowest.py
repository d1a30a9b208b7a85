"""Fail when constraints/lowest.txt does not pin the lower bounds that pyproject.toml declares.

`make test-lowest` runs this first, so raising a bound in pyproject.toml without raising its pin
here (or the other way round) stops the build instead of testing versions nobody declared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def mismatches(pyproject: Path, constraints: Path) -> list[str]:
    """Return one line per pin whose version is not its package's ``>=`` bound in pyproject."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for rs in project["optional-dependencies"].values() for r in rs]
    problems: list[str] = []
    for raw in constraints.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pin = Requirement(line)
        (version,) = (Version(s.version) for s in pin.specifier if s.operator == "==")
        name = canonicalize_name(pin.name)
        found = [r for r in declared if canonicalize_name(r.name) == name]
        if not found:
            problems.append(f"{line}: pyproject.toml declares no {pin.name}")
        for req in found:
            lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
            if lows != [version]:
                problems.append(f"{line}: pyproject.toml declares {req}")
    return problems


if __name__ == "__main__":
    if problems := mismatches(ROOT / "pyproject.toml", ROOT / "constraints" / "lowest.txt"):
        sys.exit("constraints/lowest.txt disagrees with pyproject.toml:\n" + "\n".join(problems))
