"""A real Prometheus server for tests: tools, a process per test, its HTTP API, scrape waiting.

Prometheus and promtool come from the Debian package ``prometheus`` (``.ci/run`` installs it).
Where they are missing, tests that need them fail under CI (``CI`` set) and skip elsewhere.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

T = TypeVar("T")


def on_ci() -> bool:
    """Whether we run under CI, where a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def missing(what: str) -> None:
    """Fail under CI, skip elsewhere: ``what`` is needed and not installed."""
    if on_ci():
        pytest.fail(f"{what} (CI must install it)", pytrace=False)
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Return the path of ``name`` (``prometheus`` or ``promtool``); fail on CI, else skip."""
    path = shutil.which(name)
    if path is None:
        missing(
            f"{name} is not installed: apt-get install prometheus "
            "(the Debian package; .ci/run installs it)"
        )
        raise AssertionError  # unreachable: missing() fails or skips
    return path


def require_module(name: str, install: str) -> ModuleType:
    """Import ``name``; if it is not installed, fail on CI, else skip naming ``install``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed: pip install -e '.[test]' ({install})")
        raise  # unreachable: missing() fails or skips


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScrapeWatch(Collector):
    """A prometheus_client collector that exports nothing and counts the scrapes of its registry.

    Register it on the exporter's registry; ``wait_after(n)`` returns once scrape ``n + 1`` has
    begun, which is the test's clock: Prometheus can only know something new after a scrape.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0

    @property
    def count(self) -> int:
        """How many times the registry has been collected so far."""
        with self._changed:
            return self._count

    def collect(self) -> Iterator[Metric]:
        """Called by prometheus_client on every scrape: count it and wake waiters."""
        with self._changed:
            self._count += 1
            self._changed.notify_all()
        return iter(())

    def wait_after(self, seen: int, timeout: float) -> bool:
        """Block until more than ``seen`` scrapes happened, at most ``timeout`` s; say whether."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count > seen, timeout=max(timeout, 0.0))


class PromQueryError(Exception):
    """Prometheus answered a query with an error (``errorType: error``)."""


class PrometheusServer:
    """One ``prometheus`` process on 127.0.0.1, its TSDB and config in ``workdir``.

    It scrapes ``targets`` every second and evaluates ``rule_files`` every second.
    """

    def __init__(
        self, binary: str, workdir: Path, targets: list[str], rule_files: list[Path]
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """The configuration the server runs with (JSON is valid YAML)."""
        return json.dumps(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(path) for path in self.rule_files],
                "scrape_configs": [
                    {
                        "job_name": "fluxgate-stream",
                        "static_configs": [{"targets": self.targets}],
                    }
                ],
            },
            indent=2,
        )

    def start(self) -> None:
        """Start the process; it is ready once it has scraped (see ``ScrapeWatch``)."""
        config = self.workdir / "prometheus.yml"
        config.write_text(self.config(), encoding="utf-8")
        self.port = free_port()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # our own fixed argument list
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Terminate the process and wait for it (kill it after 10 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Fail the test with the server's log if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(
                f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}",
                pytrace=False,
            )

    def api(self, path: str, **params: str | list[str]) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``.

        Raises:
            PromQueryError: Prometheus answered ``status: error`` (a bad query, say).
            OSError: the server could not be reached, or answered without the API's JSON (an
                ``HTTPError``: "503 Service Unavailable" until it is ready, which may come just
                after its first scrape).
        """
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api/v1/{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  # http://127.0.0.1 only
                body = json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                raw = error.read()
            try:
                body = json.loads(raw)
            except ValueError:
                raise error from None  # not the API speaking: as unreachable, an OSError
        if body.get("status") != "success":
            raise PromQueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query at the current time; return its vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def query_range(self, expr: str, seconds: int = 60) -> list[dict[str, Any]]:
        """Run a range query over the last ``seconds``, one step a second; return its matrix."""
        end = time.time()
        data = self.api("query_range", query=expr, start=str(end - seconds), end=str(end), step="1")
        assert data["resultType"] == "matrix", data
        return list(data["result"])


async def eventually(
    server: PrometheusServer,
    watch: ScrapeWatch,
    probe: Callable[[], tuple[bool, T]],
    *,
    what: str,
    within: float = 30.0,
) -> T:
    """Run ``probe`` (in a thread) after each scrape until it says done; return what it saw.

    ``probe`` returns ``(done, seen)``. Between tries we wait for the exporter's next scrape, so
    Prometheus has had a chance to learn something new. Unreachable servers count as not done.
    Fails after ``within`` seconds, showing the last ``seen`` and the server's log.
    """
    deadline = time.monotonic() + within
    seen: object = None
    while True:
        scrapes = watch.count
        try:
            done, result = await anyio.to_thread.run_sync(probe)
        except OSError as error:  # not listening yet
            done, seen = False, error
        else:
            if done:
                return result
            seen = result
        server.check_alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(
                f"Prometheus never showed {what} within {within} s; last answer: {seen!r}\n"
                f"prometheus log:\n{server.log_tail()}",
                pytrace=False,
            )
        # Wake at the next scrape, or every second to notice a dead server.
        await anyio.to_thread.run_sync(watch.wait_after, scrapes, min(remaining, 1.0))
