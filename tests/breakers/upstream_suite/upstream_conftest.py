"""Adapter that runs fluxgate's own breaker tests against ``AnyioCircuitBreaker`` (async tests)
and ``ThreadSafeCircuitBreaker`` (sync tests).

``tests/breakers/test_upstream_suite.py`` copies this file, as ``conftest.py``, next to fluxgate's
``tests/test_circuitbreaker.py`` (taken from the fluxgate sdist at test time, never committed here)
and runs pytest on it in a subprocess. Their file is not edited; this conftest adapts it:

1. Selection: only coroutine tests run, the ``AsyncCircuitBreaker`` tests. With
   ``FLUXGATE_UPSTREAM_TARGET=threadsafe``, only the others run, the ``CircuitBreaker`` tests,
   with their module's ``CircuitBreaker`` (and ``fluxgate.CircuitBreaker``) replaced by
   ``ThreadSafeCircuitBreaker``; steps 2 to 4 concern the coroutine tests only.
2. Backends: their suite relies on pytest-asyncio's auto mode. Here every coroutine test gets the
   ``anyio`` marker instead, and ``anyio_backend`` runs it on asyncio and on trio.
3. Target: their module's ``AsyncCircuitBreaker`` (and ``fluxgate.AsyncCircuitBreaker``) becomes
   ``AnyioCircuitBreaker``. With ``FLUXGATE_UPSTREAM_TARGET=upstream`` the swap is skipped: the
   negative control that shows the harness runs their assertions, and runs them on trio.
4. Trio: a few tests call asyncio directly (``create_task``, ``gather``, ``wait_for``, ``Event``,
   ``Lock``, ``sleep``). On trio their module's ``asyncio`` global is replaced with
   ``_AsyncioOnAnyio``, which provides those names with anyio, and ``create_task`` spawns into a
   task group around the test body. On asyncio they use the real ``asyncio``. On both backends
   the body runs under a deadline (``DEADLINE``).
5. ``freezer``: pytest-freezer's fixture is replaced by ``_WallClockFreezer``, which freezes
   ``time.time`` only. freezegun would also freeze the monotonic clocks that trio's scheduler
   reads, and pytest-freezer is not a dependency of this project. Their module imports
   ``freezegun.api.FrozenDateTimeFactory`` for an annotation; without freezegun installed, a stub
   ``freezegun.api`` module provides that name.
6. Metering: with ``FLUXGATE_UPSTREAM_METERED=1``, every breaker the tests build is metered by
   ``meter_calls()`` from its construction on (a subclass that meters itself, on a registry and a
   pipeline of its own, so its calls are written directly): the metered breaker must pass the
   same tests. ``FLUXGATE_UPSTREAM_TARGET=sync`` runs the sync tests against upstream's own
   ``CircuitBreaker`` (for its metered variant).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import inspect
import os
import sys
import time
import types
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import fluxgate
import fluxgate.permits
import pytest
from prometheus_client import CollectorRegistry

from fluxgate_stream.anyio_breaker import AnyioCircuitBreaker
from fluxgate_stream.calls import meter_calls
from fluxgate_stream.pipeline import SignalPipeline
from fluxgate_stream.threadsafe_breaker import ThreadSafeCircuitBreaker

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator

    from anyio.abc import TaskGroup

T = TypeVar("T")

TARGET = os.environ.get("FLUXGATE_UPSTREAM_TARGET", "anyio")
#: Whether this run is of the sync tests (``CircuitBreaker``), else of the coroutine tests.
SYNC = TARGET in {"threadsafe", "sync"}
#: Whether every breaker built is metered (``meter_calls``).
METERED = os.environ.get("FLUXGATE_UPSTREAM_METERED") == "1"


def _metered(cls: type[T]) -> type[T]:
    """A subclass of breaker class ``cls`` whose instances meter their own calls."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        cls.__init__(self, *args, **kwargs)
        meter_calls(self, "upstream", CollectorRegistry(), pipeline=SignalPipeline())

    return type(cls.__name__, (cls,), {"__init__": __init__})


#: Backends to run on; the negative control runs each in its own process (see the test module).
BACKENDS = os.environ.get("FLUXGATE_UPSTREAM_BACKENDS", "asyncio,trio").split(",")

#: Seconds each test may take, enforced inside the event loop with ``anyio.fail_after``: in this
#: run, pytest-timeout's alarm did not interrupt a trio test blocked waiting for an event (as
#: upstream's class does in the negative control), so the run would hang instead of failing.
DEADLINE = float(os.environ.get("FLUXGATE_UPSTREAM_DEADLINE", "30"))

_TASK_GROUP: contextvars.ContextVar[TaskGroup] = contextvars.ContextVar("upstream_task_group")


class _ShimTask(Generic[T]):
    """What ``create_task`` returns on trio: a handle whose ``await`` gives the task's result."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._result: T | None = None
        self._error: Exception | None = None

    async def run(self, coro: Awaitable[T]) -> None:
        try:
            self._result = await coro
        except Exception as exc:  # noqa: BLE001 - kept for whoever awaits the task, like asyncio
            self._error = exc
        finally:
            self._done.set()

    async def result(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()


class _AsyncioOnAnyio:
    """The part of ``asyncio`` fluxgate's tests call, implemented with anyio (used on trio)."""

    TimeoutError = TimeoutError
    Event = anyio.Event
    Lock = anyio.Lock
    sleep = staticmethod(anyio.sleep)  # sleep-ok: maps the asyncio.sleep calls in their tests

    @staticmethod
    def create_task(coro: Coroutine[Any, Any, T]) -> _ShimTask[T]:
        task: _ShimTask[T] = _ShimTask()
        _TASK_GROUP.get().start_soon(task.run, coro)
        return task

    @staticmethod
    async def wait_for(awaitable: Awaitable[T], timeout: float) -> T:  # noqa: ASYNC109 - asyncio.wait_for's signature
        with anyio.fail_after(timeout):
            return await awaitable

    @staticmethod
    async def gather(*awaitables: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        tasks = [
            aw if isinstance(aw, _ShimTask) else _AsyncioOnAnyio.create_task(aw)
            for aw in awaitables
        ]
        results: list[Any] = []
        for task in tasks:
            try:
                results.append(await task)
            except Exception as exc:  # noqa: PERF203 - one outcome per task, as asyncio.gather
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the asyncio-on-anyio shim has no {name!r}; add it to the adapter")


class _WallClockFreezer:
    """pytest-freezer's ``freezer``, reduced to what fluxgate's tests use: a frozen wall clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._now = time.time()
        monkeypatch.setattr(time, "time", self.time)
        # RampUp imported time by name; freezegun would patch that binding too.
        monkeypatch.setattr(fluxgate.permits, "time", self.time)

    def time(self) -> float:
        return self._now

    def tick(self, delta: float | timedelta = 1.0) -> None:
        self._now += delta.total_seconds() if isinstance(delta, timedelta) else float(delta)


def pytest_configure(config: pytest.Config) -> None:
    """Set up what their module needs at import. A hook, so importing this file changes nothing."""
    if TARGET not in {"anyio", "upstream", "threadsafe", "sync"}:
        raise pytest.UsageError(
            "FLUXGATE_UPSTREAM_TARGET must be 'anyio', 'upstream', 'threadsafe' or 'sync', "
            f"got {TARGET!r}"
        )
    if importlib.util.find_spec("freezegun") is None:
        stub = types.ModuleType("freezegun.api")
        stub.FrozenDateTimeFactory = _WallClockFreezer
        sys.modules["freezegun"] = types.ModuleType("freezegun")
        sys.modules["freezegun.api"] = stub


@pytest.fixture
def freezer(monkeypatch: pytest.MonkeyPatch) -> _WallClockFreezer:
    return _WallClockFreezer(monkeypatch)


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _swap(monkeypatch: pytest.MonkeyPatch, module: object, name: str, cls: type[object]) -> None:
    """Make ``name`` (their module's and ``fluxgate``'s) ``cls``, metered if ``METERED``."""
    target = _metered(cls) if METERED else cls
    monkeypatch.setattr(module, name, target)
    monkeypatch.setattr(fluxgate, name, target)


@pytest.fixture(autouse=True)
def _retarget(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    module = request.module
    if SYNC:
        sync = ThreadSafeCircuitBreaker if TARGET == "threadsafe" else fluxgate.CircuitBreaker
        _swap(monkeypatch, module, "CircuitBreaker", sync)
        return
    if TARGET == "anyio" or METERED:
        breaker = AnyioCircuitBreaker if TARGET == "anyio" else fluxgate.AsyncCircuitBreaker
        _swap(monkeypatch, module, "AsyncCircuitBreaker", breaker)
    if request.getfixturevalue("anyio_backend") == "trio":
        monkeypatch.setattr(module, "asyncio", _AsyncioOnAnyio())


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    if not SYNC and inspect.iscoroutinefunction(obj) and name.startswith("test"):
        pytest.mark.anyio(obj)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept = [
        item
        for item in items
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.function) != SYNC
    ]
    deselected = [item for item in items if item not in kept]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def _bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Run ``test`` under a deadline, inside a task group that ``create_task`` spawns into."""

    @functools.wraps(test)
    async def wrapper(**kwargs: Any) -> None:
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:
            token = _TASK_GROUP.set(tg)
            try:
                with anyio.fail_after(DEADLINE):
                    await test(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, outside the task group, so it is not wrapped in an ExceptionGroup
                failure = exc
            finally:
                _TASK_GROUP.reset(token)
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    return wrapper


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    if "anyio_backend" in pyfuncitem.funcargs:
        pyfuncitem.obj = _bounded(pyfuncitem.obj)
    return (yield)
