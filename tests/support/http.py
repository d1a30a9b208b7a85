"""Reading a real metrics endpoint over HTTP, for tests that serve one."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

#: Samples by (name, sorted labels), as ``scrape`` returns them.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(url: str) -> tuple[int, str]:
    """GET ``url`` (following redirects); return the status and the body, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # our own server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def scrape(url: str) -> Samples:
    """Every sample served at ``url``, parsed as Prometheus does, minus ``_created``."""
    status, text = http_get(url)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def poll(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Re-check ``predicate`` (each check is a real HTTP round trip) until true or the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
