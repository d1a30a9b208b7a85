"""fluxgate's own breaker tests, re-targeted at our breakers.

The ``AsyncCircuitBreaker`` tests run against ``AnyioCircuitBreaker`` on both backends; the sync
``CircuitBreaker`` tests run against ``ThreadSafeCircuitBreaker``, which must behave exactly as
upstream's class wherever one thread calls it.

The tests come from the sdist of the installed fluxgate version, downloaded with pip at test time
into a cache directory outside the repository (``$FLUXGATE_STREAM_CACHE_DIR``, else
``$XDG_CACHE_HOME/fluxgate-stream`` or ``~/.cache/fluxgate-stream``). They are run unedited, in a
pytest subprocess, next to ``tests/breakers/upstream_suite/upstream_conftest.py`` copied in as their
``conftest.py``. That conftest does the re-targeting and runs every test on asyncio and on trio.

The negative control runs the same harness on upstream's own class. It shows that the harness
leaves upstream's tests intact on asyncio (they all pass there) and really runs them on trio (where
upstream's asyncio-only class fails them). It runs each backend in its own process: upstream's
class leaves never-awaited coroutines behind on trio, and their "never awaited" warnings, raised
whenever they are garbage-collected, would otherwise fail an unrelated asyncio test.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ..support.processes import run_python, start_python

#: The first test also downloads fluxgate's sdist (on a fresh machine), and the runs go a CPU's
#: worth at a time: more than the default 120 s may pass.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

FLUXGATE_VERSION = importlib.metadata.version("fluxgate")
ADAPTER = Path(__file__).parent / "upstream_suite" / "upstream_conftest.py"
TEST_FILE = "test_circuitbreaker.py"
BACKENDS = ("asyncio", "trio")
RUN_TIMEOUT = 100  # seconds for one pytest subprocess; each test also has its own deadline


def _cache_dir() -> Path:
    if explicit := os.environ.get("FLUXGATE_STREAM_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fluxgate-stream"


def _download_upstream_tests(target: Path) -> None:
    """Fetch fluxgate's sdist with pip and keep only its ``tests/test_circuitbreaker.py``."""
    with tempfile.TemporaryDirectory() as download_dir:
        proc = run_python(
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "--quiet",
            f"fluxgate=={FLUXGATE_VERSION}",
            "-d",
            download_dir,
            timeout=300,
            check=False,
        )
        sdists = sorted(Path(download_dir).glob("*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            reason = (proc.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            pytest.skip(
                f"cannot download the fluxgate {FLUXGATE_VERSION} sdist from PyPI: {reason}"
            )
        with tarfile.open(sdists[0]) as sdist:
            member = next(
                (m for m in sdist.getmembers() if m.name.endswith(f"/tests/{TEST_FILE}")), None
            )
            assert member is not None, f"the fluxgate {FLUXGATE_VERSION} sdist ships no {TEST_FILE}"
            source = sdist.extractfile(member)
            assert source is not None
            data = source.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)  # atomic: a concurrent or interrupted run never sees half a file


@pytest.fixture(scope="module")
def upstream_test_file() -> Path:
    path = _cache_dir() / f"fluxgate-{FLUXGATE_VERSION}-{TEST_FILE}"
    if not path.exists():
        _download_upstream_tests(path)
    return path


def _test_names(path: Path, kind: type[ast.FunctionDef | ast.AsyncFunctionDef]) -> list[str]:
    """Names of the module-level tests of ``kind`` (coroutine or plain) in fluxgate's file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(
        node.name for node in tree.body if isinstance(node, kind) and node.name.startswith("test")
    )


@pytest.fixture(scope="module")
def upstream_async_tests(upstream_test_file: Path) -> list[str]:
    """Names of the module-level coroutine tests in fluxgate's file: what the harness must run."""
    return _test_names(upstream_test_file, ast.AsyncFunctionDef)


@pytest.fixture(scope="module")
def upstream_sync_tests(upstream_test_file: Path) -> list[str]:
    """Names of the module-level plain (sync) tests in fluxgate's file."""
    return _test_names(upstream_test_file, ast.FunctionDef)


def _start_run(  # noqa: PLR0913, PLR0917  # one run's settings
    run_dir: Path,
    test_file: Path,
    target: str,
    backends: str,
    deadline: float,
    metered: bool = False,  # as above
) -> subprocess.Popen[str]:
    run_dir.mkdir()
    shutil.copyfile(test_file, run_dir / TEST_FILE)
    shutil.copyfile(ADAPTER, run_dir / "conftest.py")
    (run_dir / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers\nfilterwarnings = error\n", encoding="utf-8"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["FLUXGATE_UPSTREAM_TARGET"] = target
    env["FLUXGATE_UPSTREAM_BACKENDS"] = backends
    env["FLUXGATE_UPSTREAM_DEADLINE"] = str(deadline)
    env["FLUXGATE_UPSTREAM_METERED"] = "1" if metered else "0"
    return start_python(
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=no" if target == "upstream" and not metered else "--tb=short",
        "--junitxml=report.xml",
        TEST_FILE,
        cwd=run_dir,
        env=env,
        stderr=subprocess.STDOUT,
    )


def _results(run_dir: Path, proc: subprocess.Popen[str]) -> dict[str, dict[str, str]]:
    """Map backend -> test name -> ``"passed"`` or the first line of what went wrong."""
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    report = run_dir / "report.xml"
    assert report.exists(), f"the upstream suite did not run:\n{output}"
    results: dict[str, dict[str, str]] = {backend: {} for backend in (*BACKENDS, "sync")}
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 - our own subprocess's junit report
        name, _, backend = case.attrib["name"].partition("[")
        backend = backend or "sync"  # a sync test is not parametrized by backend
        problem = next(iter(case), None)
        outcome = "passed" if problem is None else f"{problem.tag}: {problem.get('message', '')}"
        results[backend.rstrip("]")][name] = outcome.splitlines()[0]
    return results


@pytest.fixture(scope="module")
def suite_results(
    upstream_test_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, dict[str, str]]]:
    """All runs, as many at a time as there are CPUs: target -> backend -> name -> outcome.

    Not all at once: upstream's tests wait for some tasks with short timeouts (0.3 s), which
    eight interpreters starting together on two cores can starve past.
    """
    root = tmp_path_factory.mktemp("upstream-suite")
    settings: dict[str, tuple[str, str, float, bool]] = {
        "anyio": ("anyio", "asyncio,trio", 30, False),
        "upstream-asyncio": ("upstream", "asyncio", 30, False),
        # Upstream's class hangs one trio test until its deadline: keep that short.
        "upstream-trio": ("upstream", "trio", 2, False),
        "threadsafe": ("threadsafe", "", 30, False),
    }
    # The same tests against metered breakers (meter_calls): each must behave as unmetered.
    metered = {
        "metered-anyio": ("anyio", "asyncio,trio"),
        "metered-async": ("upstream", "asyncio"),
        "metered-threadsafe": ("threadsafe", ""),
        "metered-sync": ("sync", ""),
    }
    for run, (target, backends) in metered.items():
        settings[run] = (target, backends, 30, True)
    names = list(settings)
    at_once = os.cpu_count() or 1
    results: dict[str, dict[str, dict[str, str]]] = {}
    for first in range(0, len(names), at_once):
        wave = {
            run: _start_run(root / run, upstream_test_file, *settings[run])
            for run in names[first : first + at_once]
        }
        results.update({run: _results(root / run, proc) for run, proc in wave.items()})
    return {
        "threadsafe": {"sync": results["threadsafe"]["sync"]},
        "anyio": results["anyio"],
        "metered-anyio": results["metered-anyio"],
        "metered-async": {"asyncio": results["metered-async"]["asyncio"]},
        "metered-threadsafe": {"sync": results["metered-threadsafe"]["sync"]},
        "metered-sync": {"sync": results["metered-sync"]["sync"]},
        "upstream": {
            "asyncio": results["upstream-asyncio"]["asyncio"],
            "trio": results["upstream-trio"]["trio"],
        },
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_fluxgate_async_suite_passes_against_anyio_breaker(
    suite_results: dict[str, dict[str, dict[str, str]]],
    upstream_async_tests: list[str],
    backend: str,
) -> None:
    results = suite_results["anyio"][backend]
    assert sorted(results) == upstream_async_tests
    assert {name: outcome for name, outcome in results.items() if outcome != "passed"} == {}


def test_control_upstream_class_passes_on_asyncio_and_fails_on_trio(
    suite_results: dict[str, dict[str, dict[str, str]]],
    upstream_async_tests: list[str],
) -> None:
    on_asyncio = suite_results["upstream"]["asyncio"]
    on_trio = suite_results["upstream"]["trio"]
    assert sorted(on_asyncio) == upstream_async_tests
    assert {name: outcome for name, outcome in on_asyncio.items() if outcome != "passed"} == {}
    assert sorted(on_trio) == upstream_async_tests
    assert [name for name, outcome in on_trio.items() if outcome != "passed"] != []


def test_fluxgate_sync_suite_passes_against_threadsafe_breaker(
    suite_results: dict[str, dict[str, dict[str, str]]],
    upstream_sync_tests: list[str],
) -> None:
    results = suite_results["threadsafe"]["sync"]
    assert sorted(results) == upstream_sync_tests
    assert {name: outcome for name, outcome in results.items() if outcome != "passed"} == {}


@pytest.mark.parametrize(
    ("run", "backend"),
    [
        ("metered-anyio", "asyncio"),
        ("metered-anyio", "trio"),
        ("metered-async", "asyncio"),
    ],
)
def test_fluxgate_async_suite_passes_against_metered_breakers(
    suite_results: dict[str, dict[str, dict[str, str]]],
    upstream_async_tests: list[str],
    run: str,
    backend: str,
) -> None:
    """AnyioCircuitBreaker and fluxgate's AsyncCircuitBreaker behave the same once metered."""
    results = suite_results[run][backend]
    assert sorted(results) == upstream_async_tests
    assert {name: outcome for name, outcome in results.items() if outcome != "passed"} == {}


@pytest.mark.parametrize("run", ["metered-threadsafe", "metered-sync"])
def test_fluxgate_sync_suite_passes_against_metered_breakers(
    suite_results: dict[str, dict[str, dict[str, str]]],
    upstream_sync_tests: list[str],
    run: str,
) -> None:
    """ThreadSafeCircuitBreaker and fluxgate's CircuitBreaker behave the same once metered."""
    results = suite_results[run]["sync"]
    assert sorted(results) == upstream_sync_tests
    assert {name: outcome for name, outcome in results.items() if outcome != "passed"} == {}
