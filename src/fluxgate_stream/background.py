"""``ConsumerThread``: the pipeline's consumer on an event loop of its own, in a background thread.

For apps whose breakers run in threads and that have no event loop of their own to lend: WSGI
apps (Flask, Django) under a threaded server or gunicorn's sync and gthread workers, plain
thread pools, scripts. Start it once per process, before the first request:

    from fluxgate_stream import ConsumerThread

    consumer = ConsumerThread()  # the default pipeline, which listeners use by default
    consumer.start()  # returns once the consumer runs: from now on, signals are queued
    ...
    consumer.stop()  # applies everything still queued, then joins the thread

or ``with ConsumerThread():``. While it runs, a listener call from a request thread is a deque
append onto the pipeline's thread bridge; the consumer, on its own loop, writes the metrics.
``flush()`` waits, from any other thread, until what was queued before it is applied.

Concurrency model
-----------------
* The background thread runs ``anyio.run()`` (asyncio by default, or trio) with one task group:
  the pipeline's consumer and the tasks given to ``start_soon()``. It owns that loop; other
  threads reach it only through the loop's token: ``stop()`` schedules the group's cancellation
  without waiting for the loop (``_compat.call_soon``), ``flush()`` and ``start_soon()`` wait for
  the loop to run their call (``anyio.from_thread``).
* ``_lock`` guards ``_phase`` (new, running, stopping, stopped) and nothing else: only the
  checks and the assignment run under it, and producers (listener calls) never take it.
* ``_token``, ``_group`` and ``_error`` are written by the background thread before it sets
  ``_ready``; other threads read them only after ``_ready.wait()``, which orders the two.
* Stopping cancels the task group: the consumer applies everything still queued before it
  returns (``SignalPipeline.run``), then the loop ends and the thread exits; ``stop()`` joins it.
  Listener calls made after that apply directly, as with no consumer.
* ``os.fork()`` copies no thread: in the child, every ``ConsumerThread`` started in the parent
  is stopped (``_forked``, run by an ``after_in_child`` hook): its lock is fresh, its token to
  the parent's loop forgotten, its ``atexit`` hook gone, so nothing in the child reaches the
  parent's loop. The pipeline's own state after a fork is the pipeline's business.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING, Final, Literal

import anyio
import anyio.from_thread
from anyio.lowlevel import current_token

from fluxgate_stream._checks import check_choice, check_timeout
from fluxgate_stream._compat import call_soon, kept
from fluxgate_stream.pipeline import SignalPipeline, resolve_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

    from anyio.abc import TaskGroup
    from anyio.lowlevel import EventLoopToken
    from typing_extensions import Self

__all__ = ["ConsumerThread"]

#: The anyio backends a ``ConsumerThread`` can run.
BACKENDS: Final = ("asyncio", "trio")

_log = logging.getLogger("fluxgate_stream")

_NEW, _RUNNING, _STOPPING, _STOPPED = "new", "running", "stopping", "stopped"


class ConsumerThread:
    """Runs a pipeline's consumer on an event loop in a background thread, for threaded apps.

    ``start()`` returns once the consumer runs, so signals from the first request on are
    queued; ``stop()`` cancels it, which applies everything still queued, and joins the thread.
    A context manager does both. A ``ConsumerThread`` runs once, like a ``threading.Thread``:
    to run the consumer again, create another.

    The thread is a daemon thread, so it never keeps the process alive; a ``ConsumerThread``
    still running when the interpreter exits is stopped by an ``atexit`` hook, which applies
    everything queued first. A process that ends with ``os._exit()`` (a forked child's usual
    exit) runs no ``atexit`` hook: call ``stop()`` there (gunicorn: in ``worker_exit``).

    Start it in the process that serves: after a fork (gunicorn's ``post_fork`` hook), not at
    import time in a server that imports the app and then forks its workers (``--preload``).
    A fork copies no thread: in a forked child, a ``ConsumerThread`` started in the parent is
    stopped (``running`` is false, ``stop()`` returns at once); start a new one there.

    Args:
        pipeline: the pipeline whose consumer to run; ``None`` means ``default_pipeline()``,
            the one listeners created without ``pipeline=`` use.
        backend: the anyio backend of the thread's event loop: ``"asyncio"`` or ``"trio"``
            (which needs trio installed: the ``trio`` extra).

    Raises:
        TypeError: ``pipeline`` is not a ``SignalPipeline``, or ``backend`` not a ``str``.
        ValueError: ``backend`` is neither ``"asyncio"`` nor ``"trio"``.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from fluxgate import CircuitBreaker
        >>> from fluxgate_stream import PrometheusListener, SignalPipeline
        >>> registry, pipeline = CollectorRegistry(), SignalPipeline()
        >>> cb = CircuitBreaker(listeners=[PrometheusListener("api", registry, pipeline=pipeline)])
        >>> with ConsumerThread(pipeline) as consumer:
        ...     cb.force_open()  # queued for the consumer's thread (or, if lone, applied here)
        ...     consumer.flush()  # returns once the consumer has applied it
        ...     registry.get_sample_value(
        ...         "circuit_breaker_state", {"circuit_name": "api", "state": "forced_open"}
        ...     )
        1.0
        >>> pipeline.stats()["bridge"] + pipeline.stats()["direct"]  # one path or the other
        1
    """

    def __init__(
        self,
        pipeline: SignalPipeline | None = None,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
    ) -> None:
        self._pipeline: Final = resolve_pipeline(pipeline)
        self._backend: Final = check_choice(backend, "backend", BACKENDS)
        self._lock = threading.Lock()  # guards _phase only (a fresh one in a forked child)
        self._phase: str = _NEW
        self._ready: Final = threading.Event()  # set by the thread: consumer started, or failed
        self._thread: Final = threading.Thread(
            target=self._serve, name="fluxgate-stream-consumer", daemon=True
        )
        # Written by the background thread before it sets _ready; read by others after.
        self._token: EventLoopToken | None = None
        self._group: TaskGroup | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<ConsumerThread {self._backend} {self._phase} pipeline={self._pipeline!r}>"

    @property
    def pipeline(self) -> SignalPipeline:
        """The pipeline whose consumer this thread runs."""
        return self._pipeline

    @property
    def backend(self) -> str:
        """The anyio backend of the thread's event loop."""
        return self._backend

    @property
    def running(self) -> bool:
        """Whether the consumer runs on this thread now (started, not stopped, not crashed)."""
        return self._phase == _RUNNING and self._thread.is_alive()

    # -- start and stop --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the thread; return once its consumer runs (so signals are queued from now on).

        Returns:
            This ``ConsumerThread``, for ``consumer = ConsumerThread().start()``.

        Raises:
            RuntimeError: this ``ConsumerThread`` was started before, or its pipeline's consumer
                already runs elsewhere (another ``ConsumerThread``, a task group, an ASGI
                lifespan): a pipeline has one consumer.
            Exception: whatever starting the event loop raised (anyio's ``LookupError`` for
                ``backend="trio"`` without trio installed); the thread has ended.

        A ``KeyboardInterrupt`` that interrupts the wait leaves the consumer starting: it runs
        until ``stop()`` or the interpreter's exit, as if ``start()`` had returned.
        """
        with self._lock:
            if self._phase != _NEW:
                raise RuntimeError(
                    f"this ConsumerThread was already started (it is {self._phase}); "
                    "a ConsumerThread runs once: create a new one"
                )
            if self._pipeline.running:
                raise RuntimeError(
                    "this SignalPipeline's consumer is already running elsewhere (another "
                    "ConsumerThread, a task group or an ASGI lifespan); a pipeline has one consumer"
                )
            self._phase = _RUNNING
        # Before the thread starts: an exception in this thread from here on (a Ctrl-C while
        # we wait) leaves a consumer running, which exit and fork must still find.
        atexit.register(self._stop_at_exit)
        kept("background.at_fork", ConsumerThread._register_at_fork)  # once per process
        _STARTED.add(self)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            atexit.unregister(self._stop_at_exit)
            _STARTED.discard(self)
            with self._lock:
                self._phase = _STOPPED
            self._thread.join()
            raise self._error
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the consumer, which applies everything still queued, and join the thread.

        Idempotent: stopping a stopped ``ConsumerThread`` (or one whose thread has ended) only
        waits for its thread. Call it from any thread but the consumer's own.

        Args:
            timeout: the most seconds to wait for the thread to end; ``None`` (or more than
                ``threading.TIMEOUT_MAX``, ``math.inf`` say) waits as long as it takes.
                Applying what is queued takes microseconds per circuit; a task of yours given to
                ``start_soon()`` that ignores cancellation could take longer.

        Raises:
            RuntimeError: ``start()`` was never called, or this is the consumer's own thread.
            TimeoutError: the thread was still running after ``timeout`` seconds.
            TypeError, ValueError: ``timeout`` is neither ``None`` nor a positive number.
        """
        timeout = check_timeout(timeout)
        self._not_on_own_thread("stop()")
        with self._lock:
            if self._phase == _NEW:
                raise RuntimeError("ConsumerThread.stop() was called before start()")
            cancel = self._phase == _RUNNING
            if cancel:
                self._phase = _STOPPING
        self._ready.wait()  # a start() under way on another thread: its loop is up, or failed
        if cancel:
            atexit.unregister(self._stop_at_exit)
            group, token = self._group, self._token
            if group is not None and token is not None:
                # RuntimeError: the loop has ended already (a task given to start_soon() failed).
                with suppress(RuntimeError):
                    call_soon(token, group.cancel_scope.cancel)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the consumer thread was still running after {timeout} s")
        with self._lock:
            self._phase = _STOPPED

    @staticmethod
    def _register_at_fork() -> bool:
        if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
            os.register_at_fork(after_in_child=ConsumerThread._after_fork_in_child)
        return True

    @staticmethod
    def _after_fork_in_child() -> None:
        for consumer in list(_STARTED):
            consumer._forked()

    def _forked(self) -> None:
        """In a forked child: the thread did not come along; nothing may reach its loop."""
        self._lock = threading.Lock()  # the parent's may have been held by another thread
        if self._phase != _NEW:
            self._phase = _STOPPED
            self._token = None
            self._group = None
            self._ready.set()
            atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        """The ``atexit`` hook: stop, so that what is queued is applied before the exit."""
        if self._phase == _RUNNING:
            self.stop()

    def __enter__(self) -> Self:
        """``start()``, and return this ``ConsumerThread``."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """``stop()``."""
        self.stop()

    # -- calls onto the loop ---------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued before the call has been applied to the metrics.

        ``SignalPipeline.flush()`` for threads: it runs that coroutine on the consumer's loop and
        waits for it. With no consumer running (before ``start()``, after ``stop()``) it returns
        at once: listener calls then apply directly, and stopping applied what was queued. While
        another thread's ``stop()`` is under way, it waits for the thread to end, as the stop
        applies what was queued.

        Args:
            timeout: the most seconds to wait; ``None`` (or more than ``threading.TIMEOUT_MAX``)
                waits as long as it takes.

        Raises:
            TimeoutError: it was not all applied within ``timeout`` seconds.
            RuntimeError: this is the consumer's own thread (``await pipeline.flush()`` there).
            TypeError, ValueError: ``timeout`` is neither ``None`` nor a positive number.
        """
        timeout = check_timeout(timeout)
        self._not_on_own_thread("flush()")
        token = self._token
        if self._phase == _STOPPING:
            # Another thread's stop() is under way: the consumer's end applies what was queued.
            self._ready.wait(timeout)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the consumer thread was still running after {timeout} s")
            return
        if not self.running or token is None:
            return
        try:
            anyio.from_thread.run(self._flush, timeout, token=token)
        except anyio.RunFinishedError:
            return  # stopped meanwhile: stopping applied everything

    async def _flush(self, seconds: float | None) -> None:
        with anyio.fail_after(seconds):
            await self._pipeline.flush()

    def start_soon(self, task: Callable[[], Coroutine[object, object, object]]) -> None:
        """Run ``task()`` on the consumer's event loop, next to the consumer, until ``stop()``.

        For instance the self-metrics' publisher in multiprocess mode:
        ``consumer.start_soon(export_metrics(pipeline).run)``. ``stop()`` cancels it with the
        consumer. If it raises, the consumer stops too (applying what is queued), the error is
        logged on the ``fluxgate_stream`` logger, and listener calls apply directly from then on.

        Raises:
            RuntimeError: the consumer is not running, or this is the consumer's own thread.
        """
        self._not_on_own_thread("start_soon()")
        group, token = self._group, self._token
        if not self.running or group is None or token is None:
            raise RuntimeError("ConsumerThread.start_soon() needs a running consumer: start() it")
        anyio.from_thread.run_sync(group.start_soon, task, token=token)

    def _not_on_own_thread(self, what: str) -> None:
        if threading.get_ident() == self._thread.ident:
            raise RuntimeError(
                f"ConsumerThread.{what} was called on the consumer's own thread, which it would "
                "wait for; on that loop, use the pipeline (await pipeline.flush()) directly"
            )

    # -- the background thread -------------------------------------------------------------------

    def _serve(self) -> None:
        """The thread's body: the event loop, until the task group is cancelled."""
        try:
            anyio.run(self._main, backend=self._backend)
        except BaseException as error:  # noqa: BLE001  # handed to start(), or logged: a thread's end
            if self._ready.is_set():
                _log.error("the consumer thread's event loop failed", exc_info=error)
            else:
                self._error = error
        finally:
            self._ready.set()  # start() never waits for a thread that has ended

    async def _main(self) -> None:
        async with anyio.create_task_group() as group:
            self._token = current_token()
            self._group = group
            await group.start(self._pipeline.run)
            self._ready.set()


#: Every ConsumerThread started in this process, for the fork hook (weakly held; kept across
#: importlib.reload, so the one hook sees instances of every copy of the class).
_STARTED: weakref.WeakSet[ConsumerThread] = kept(
    "background.started", weakref.WeakSet[ConsumerThread]
)
