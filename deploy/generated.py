"""What deploy/'s generators share: write their generated file, or check it is up to date.

``deploy/grafana/dashboard.py`` and ``deploy/kubernetes/generate.py`` each render one committed
file from its one source and run as scripts (the tests run them with ``--check``). deploy/ is no
package: they import this module by putting deploy/ on ``sys.path``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(
    argv: list[str] | None,
    *,
    description: str,
    output: Path,
    render: Callable[[], str],
    script: str,
) -> int:
    """Write ``render()`` to ``output``, or with ``--check`` report whether it is up to date.

    Returns:
        The exit status: 0, or 1 when ``--check`` finds the file missing or out of date.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--check", action="store_true", help=f"do not write; exit 1 if {output.name} is stale"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            sys.stderr.write(f"{output} is out of date: run python {script}\n")
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {output}\n")
    return 0
