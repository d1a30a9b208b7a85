"""Entry point: ``python -m bench [--quick] [--output PATH]``."""

from __future__ import annotations

from bench.suite import main

raise SystemExit(main())
