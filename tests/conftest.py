"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import signal

import pytest
from prometheus_client import CollectorRegistry

#: Scripts that tests run in a child interpreter: never imported here (not even for doctests),
#: since importing one runs it.
collect_ignore = ["children"]


def pytest_configure(config: pytest.Config) -> None:
    """Let SIGINT raise ``KeyboardInterrupt`` here and in every child, as from a terminal.

    A shell without job control starts a background job (``make test &``) with SIGINT ignored,
    children inherit that, and Python leaves an ignored SIGINT ignored: the tests that Ctrl-C a
    child (``interrupt_the_loop_thread.py``, the examples) then wait for ever. A handler, unlike
    ``SIG_IGN``, is reset to the default by ``exec``, and a child's Python installs its own.
    """
    del config
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test: no test shares metric state with another."""
    return CollectorRegistry()
