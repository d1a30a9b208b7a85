"""fluxgate-stream: export fluxgate circuit-breaker state to Prometheus off the breaker's path."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("fluxgate-stream")

__all__ = ["__version__"]
