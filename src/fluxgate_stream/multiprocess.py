"""prometheus_client's multiprocess mode without a server hook: dead workers stop counting.

In multiprocess mode each process writes its metrics to files of its own in
``PROMETHEUS_MULTIPROC_DIR``, and a collector merges them at scrape time. The state gauge
(``livesum``) must count live processes only, so a worker's live-gauge files must go when it
dies: prometheus_client leaves that to ``mark_process_dead(pid)``, which needs a server hook
(gunicorn's ``child_exit``). ``uvicorn --workers N`` has none, and neither has a process manager
that restarts workers on its own: there a dead worker would count in its last state for ever.

``MultiProcessCollector`` is prometheus_client's collector, which first drops the live-gauge files
of the processes that no longer exist: what ``mark_process_dead`` would have done. Use it in
place of prometheus_client's, in the worker (or the process) that serves the metrics. What it
drops and keeps, and its limits, are in its docstring (the API reference).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, cast

from prometheus_client import multiprocess as _multiprocess

from fluxgate_stream._checks import check_path, check_registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["MultiProcessCollector"]

_log = logging.getLogger("fluxgate_stream")

#: prometheus_client's merge of the files' values (a static method), typed.
_merge = cast(
    "Callable[[list[str], bool], Iterable[Metric]]",
    _multiprocess.MultiProcessCollector.merge,  # pyright: ignore[reportUnknownMemberType]  # untyped upstream
)


class MultiProcessCollector(_multiprocess.MultiProcessCollector):
    """prometheus_client's ``MultiProcessCollector``, dropping dead processes' live gauges.

    A drop-in replacement: at each collection it merges the files of ``PROMETHEUS_MULTIPROC_DIR``
    (or ``path``), as prometheus_client's does, after removing the live-gauge files of every
    process that no longer exists, as ``mark_process_dead(pid)`` would. A dead worker's state
    therefore leaves the state gauge at the first scrape after it exited, with no server hook.

    What is dropped, and what is kept:

    - Only the files of *live* gauges (``gauge_livesum_<pid>.db``, ``gauge_liveall_...``,
      ``livemax``, ``livemin``, ``livemostrecent``): the state gauge and the self-metrics'
      gauges. Counters, histograms, summaries and the other gauge modes of dead workers are kept,
      as with ``mark_process_dead``, so totals and ``rate()`` stay right when workers restart.
    - A process is alive while its pid exists in the collecting process's pid namespace
      (``os.kill(pid, 0)``) and, on Linux, is not a zombie (exited, not yet reaped by its
      parent). Every writer of the directory must run on this host and be visible from the
      collecting process: the workers of one server in one container are; a directory shared
      between containers or hosts is not supported.
    - Pid reuse: if another process gets a dead worker's pid before a scrape has seen the worker
      gone, the dead worker counts until that process exits; a new *worker* with that pid
      reopens the dead worker's files and inherits their rows, which its listeners overwrite for
      their circuits when they are created (a circuit that only the dead worker had stays
      counted). Linux hands out pids in increasing order up to ``/proc/sys/kernel/pid_max``, so
      this takes a wrap-around within one scrape interval.
    - Files named by a custom ``process_identifier`` (not a pid) are never dropped. Where there
      are no POSIX signals (Windows) nothing is dropped: it is prometheus_client's collector.
    - A file that cannot be removed (permissions) is left out of the merge, and logged once.

    A collection removes files, so it is not read-only: the same effect as the server calling
    ``mark_process_dead`` for each dead worker. Several workers may collect at once
    (prometheus_client's merge skips live-gauge files that vanish while it reads).

    Args:
        registry: the registry to register with (the one the metrics endpoint serves), or
            ``None`` to register nowhere.
        path: the directory of the files (a ``str`` or an ``os.PathLike``); ``None`` means
            ``PROMETHEUS_MULTIPROC_DIR``.

    Raises:
        TypeError: ``registry`` is neither ``None`` nor a ``CollectorRegistry``, or ``path`` is
            neither ``None``, a ``str`` nor an ``os.PathLike`` of one.
        ValueError: ``path`` is ``None`` and ``PROMETHEUS_MULTIPROC_DIR`` is not set, or the
            directory does not exist (prometheus_client's check).

    Example:
        >>> import tempfile
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> registry = CollectorRegistry()
        >>> with tempfile.TemporaryDirectory() as directory:
        ...     _ = MultiProcessCollector(registry, path=directory)
        ...     generate_latest(registry)
        b''
    """

    def __init__(
        self, registry: CollectorRegistry | None, path: str | os.PathLike[str] | None = None
    ) -> None:
        registry = check_registry(registry)
        path = check_path(path)
        super().__init__(None, path)  # pyright: ignore[reportUnknownMemberType]  # untyped upstream; it checks the directory
        self._directory = Path(path if path is not None else os.environ["PROMETHEUS_MULTIPROC_DIR"])
        self._unremovable: set[Path] = set()
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """Drop the live-gauge files of processes that no longer exist; merge the others."""
        files = [path for path in self._directory.glob("*.db") if not self._dead(path)]
        return _merge([str(path) for path in files], True)  # noqa: FBT003  # accumulate, as upstream's collect()

    def _dead(self, path: Path) -> bool:
        """Whether ``path`` is a live gauge's file of a process that no longer exists.

        Such a file is removed; if it cannot be, it is left out of the merge all the same.
        """
        pid = _live_gauge_pid(path.name)
        if pid is None or _exists(pid):
            return False
        try:
            with suppress(FileNotFoundError):  # a concurrent collection removed it
                path.unlink()
        except OSError as error:
            if path not in self._unremovable:
                self._unremovable.add(path)
                _log.warning(
                    "cannot remove %s, the live gauges of process %s, which no longer exists: "
                    "%s; it is left out of the merged metrics",
                    path,
                    pid,
                    error,
                )
        return True


def _live_gauge_pid(name: str) -> int | None:
    """The pid in a live gauge's file name (``gauge_livesum_1234.db``), else ``None``."""
    parts = name.removesuffix(".db").split("_")
    if len(parts) != 3 or parts[0] != "gauge" or not parts[1].startswith("live"):
        return None
    return int(parts[2]) if parts[2].isdigit() and int(parts[2]) > 0 else None


def _exists(pid: int) -> bool:
    """Whether process ``pid`` exists and, on Linux, has not exited (is not a zombie)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return sys.platform != "linux" or not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether Linux process ``pid`` has exited (a zombie, or reaped since ``os.kill``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:  # reaped since
        return True
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold anything, even ") ", so the last ")" ends it.
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] == b"Z"
