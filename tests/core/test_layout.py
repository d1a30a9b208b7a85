"""The package's layout keeps its promises: public names, private internals, a separate demo."""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from fluxgate.signal import Signal

import fluxgate_stream
from fluxgate_stream import PipelineStatistics, PrometheusListener, QueueingListener, SignalPipeline

from ..support.helpers import Consumer

#: The documented modules: the package and these, each with a page or a section in the docs.
PUBLIC_MODULES = {
    "anyio_breaker",
    "asgi",
    "background",
    "calls",
    "demo",
    "health",
    "listener",
    "multiprocess",
    "pipeline",
    "selfmetrics",
    "sink",
    "threadsafe_breaker",
    "time_in_state",
}


def test_every_module_but_the_documented_ones_is_private():
    found = {info.name for info in pkgutil.iter_modules(fluxgate_stream.__path__)}
    assert {name for name in found if not name.startswith("_")} == PUBLIC_MODULES


def runtime_imports(path: Path, package: Path) -> set[str]:
    """The package's modules that ``path`` imports when it is imported (not for type checking)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if not isinstance(inner, ast.ImportFrom) or inner.module is None:
                continue
            if inner.module == "fluxgate_stream":  # names, or submodules (``import _catalogue``)
                for alias in inner.names:
                    is_module = (package / f"{alias.name}.py").exists()
                    found.add(f"fluxgate_stream.{alias.name}" if is_module else inner.module)
            elif inner.module.startswith("fluxgate_stream."):
                found.add(inner.module)
    return found


def test_the_modules_import_each_other_without_a_circle():
    root = Path(fluxgate_stream.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = runtime_imports(path, root) - {name}
    assert len(graph) > 15
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError for a circle
    library = [name for name in graph if ".demo" not in name and not name.endswith("__main__")]
    for name in library:
        assert not any(".demo" in module for module in graph[name]), name
    assert order


def test_public_names_are_the_packages_own():
    for name in fluxgate_stream.__all__:
        value = getattr(fluxgate_stream, name)
        if isinstance(value, type) or callable(value):
            assert value.__module__ == "fluxgate_stream", name


def test_the_library_never_imports_the_demo_nor_its_terminal_ui():
    code = (
        "import sys, pkgutil, importlib, fluxgate_stream\n"
        "for info in pkgutil.iter_modules(fluxgate_stream.__path__):\n"
        "    if info.name not in ('demo', '__main__'):  # the demo, and its command line\n"
        "        importlib.import_module('fluxgate_stream.' + info.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fluxgate_stream.demo', 'rich'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == "[]\n"


@pytest.mark.anyio
async def test_statistics_are_a_frozen_snapshot_that_stats_mirrors(anyio_backend, registry):
    pipeline = SignalPipeline(max_buffer_size=2, lone=False)  # the counts by path: queued ones
    listener = PrometheusListener("c", registry, pipeline=pipeline)
    listener(Signal("closed", "open", 0.0))  # no consumer: direct
    async with Consumer(pipeline):
        for _ in range(5):  # two fit the stream, the rest overflow
            listener(Signal("open", "half_open", 0.0))
        queued = pipeline.statistics()
        await pipeline.flush()
        drained = pipeline.statistics()
    assert isinstance(queued, PipelineStatistics)
    # The consumer may already wait in receive(), which takes one item past the buffer.
    assert (queued.direct, queued.queued, queued.running) == (1, 2, True)
    assert queued.overflow in (2, 3)
    assert drained.stream + drained.overflow == 5
    assert (drained.queued, drained.max_buffer_size) == (0, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        drained.stream = 0  # type: ignore[misc]  # deliberately bad: a snapshot is frozen
    stopped = pipeline.statistics()
    assert not stopped.running
    as_dict = dataclasses.asdict(stopped)
    del as_dict["max_buffer_size"]
    as_dict["running"] = int(as_dict["running"])
    assert pipeline.stats() == as_dict


class _Recorder:
    """A minimal ``Target``: what a user's QueueingListener subclass writes to."""

    name = "recorded"
    closed_seq = -1
    fold = None

    def __init__(self) -> None:
        self.states: list[object] = []

    def write(self, pending: object) -> None:
        self.states.append(getattr(pending, "state", None))


class _UsersListener(QueueingListener):
    """Written to QueueingListener's documented protocol: set ``_target`` and ``_pipeline``."""

    __slots__ = ()

    def __init__(self, pipeline: SignalPipeline, target: _Recorder) -> None:
        self._pipeline = pipeline
        self._target = target


@pytest.mark.anyio
async def test_a_queueing_listener_subclass_that_sets_pipeline_and_target_works(anyio_backend):
    pipeline, recorder = SignalPipeline(), _Recorder()
    listener = _UsersListener(pipeline, recorder)
    assert listener.pipeline is pipeline
    listener(Signal("closed", "open", 0.0))  # no consumer: applied at once
    async with Consumer(pipeline):
        listener(Signal("open", "half_open", 0.0))
        await pipeline.flush()
    assert recorder.states == ["open", "half_open"]
