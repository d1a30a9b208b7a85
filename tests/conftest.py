"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

#: Scripts that tests run in a child interpreter: never imported here (not even for doctests),
#: since importing one runs it.
collect_ignore = ["children"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test: no test shares metric state with another."""
    return CollectorRegistry()
