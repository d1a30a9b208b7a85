"""Entry point: ``python -m bench [--quick | --scale F] [--only SECTION ...] [--output PATH]``."""

from __future__ import annotations

from bench.suite import main

raise SystemExit(main())
