"""prometheus_client's multiprocess mode: worker processes write, one collector reads.

Real worker processes (``PROMETHEUS_MULTIPROC_DIR`` set, as under gunicorn or uvicorn workers)
run pipelines on asyncio and trio and write to the directory; this test process is the one
collector: a ``MultiProcessCollector`` served over HTTP and scraped, as in production. The
in-process tests below switch prometheus_client into its real multiprocess mode for one test
(its mode is chosen when it is imported, so they swap in its file-backed value class).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import warnings
from pathlib import Path

import anyio
import pytest
from fluxgate.signal import Signal
from prometheus_client import CollectorRegistry, start_http_server, values
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

import fluxgate_stream
from fluxgate_stream import ALL_STATES, PrometheusListener, SignalPipeline, limit_circuits
from fluxgate_stream._catalogue import OWN_TRANSITIONS
from fluxgate_stream._compat import multiprocess
from fluxgate_stream.selfmetrics import export_metrics

from ..support.helpers import Consumer
from ..support.processes import CHILDREN, run_multiprocess_worker, run_python, start_python


class Worker:
    def __init__(self, directory: Path, k: int, final: str, backend: str) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        # -W error: any warning (say, prometheus_client's "not implemented in multi-process
        # mode") fails the worker.
        self.process = start_python(
            CHILDREN / "multiprocess_worker.py",
            str(k),
            final,
            backend,
            warnings_as_errors=True,
            env=env,
            stdin=subprocess.PIPE,
        )
        self.pid = self.process.pid

    def expect(self, **what: object) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(self.process.communicate()[1])
        assert json.loads(line) == {"pid": self.pid, **what}

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def exit(self) -> None:
        self.send("exit")
        _, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        assert err == ""


class Scraper:
    """The one collector: merges the directory's files, served over HTTP like in production."""

    def __init__(self, directory: Path) -> None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.url, timeout=10) as response:  # noqa: S310  # loopback
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def state(values: dict, name: str) -> dict[str, float | None]:
    return {
        s: values.get(("circuit_breaker_state", (("circuit_name", name), ("state", s))))
        for s in ALL_STATES
    }


def transitions(values: dict, name: str, old: str, new: str) -> float | None:
    labels = (("circuit_name", name), ("new_state", new), ("old_state", old))
    return values.get(("circuit_breaker_state_transition_total", labels))


def selfmetric(values: dict, metric: str, **labels: str) -> float | None:
    return values.get((metric, tuple(sorted({"pipeline": "default", **labels}.items()))))


def test_workers_write_one_collector_reads_and_a_dead_worker_leaves_its_counts(tmp_path):
    finals = ["open", "open", "forced_open"]
    backends = ["asyncio", "trio", "asyncio"]
    workers = [Worker(tmp_path, k, finals[k], backends[k]) for k in range(3)]
    scraper = Scraper(tmp_path)
    try:
        for worker in workers:
            worker.expect(ready=True)
        seen = scraper.scrape()
        # Counters: summed over the workers.
        cycles = sum(10 + k for k in range(3))
        assert transitions(seen, "shared", "closed", "open") == cycles + 2
        assert transitions(seen, "shared", "half_open", "closed") == cycles
        assert transitions(seen, "shared", "closed", "forced_open") == 1
        for k in range(3):
            assert transitions(seen, f"w{k}", "open", "half_open") == 5
        # The state gauge ("livesum"): how many live workers have the circuit in each state.
        assert state(seen, "shared") == {
            "closed": 0.0,
            "open": 2.0,
            "half_open": 0.0,
            "metrics_only": 0.0,
            "disabled": 0.0,
            "forced_open": 1.0,
        }
        assert state(seen, "w1")["closed"] == 1.0
        assert not any(label == "pid" for key in seen for label, _ in key[1])
        # Self-metrics, published by each worker: counters summed, gauges summed over live ones.
        sent = sum(3 * (10 + k) + 3 * 5 + 1 for k in range(3))
        paths = ("stream", "bridge", "overflow", "direct")
        taken = [selfmetric(seen, "fluxgate_stream_signals_total", path=p) or 0 for p in paths]
        assert sum(taken) == sent
        assert selfmetric(seen, "fluxgate_stream_consumer_running") == 3.0
        assert selfmetric(seen, "fluxgate_stream_buffer_size") == 3 * 4.0
        assert selfmetric(seen, "fluxgate_stream_apply_errors_total") == 0.0

        # A worker dies without a word.
        dead = workers.pop(1)
        dead.process.send_signal(signal.SIGKILL)
        dead.process.communicate(timeout=30)
        seen = scraper.scrape()
        assert state(seen, "shared")["open"] == 2.0  # its files still count...
        mark_process_dead(dead.pid, str(tmp_path))  # ...until the server's child_exit hook runs
        seen = scraper.scrape()
        assert state(seen, "shared")["open"] == 1.0
        assert state(seen, "w1") == dict.fromkeys(ALL_STATES)  # its own circuit has no series
        assert transitions(seen, "shared", "closed", "open") == cycles + 2  # counts stay
        assert transitions(seen, "w1", "open", "half_open") == 5
        assert selfmetric(seen, "fluxgate_stream_consumer_running") == 2.0
        assert (
            sum(selfmetric(seen, "fluxgate_stream_signals_total", path=p) or 0 for p in paths)
            == sent
        )

        # close() in a worker: that worker stops counting in any state; counters keep totals.
        workers[1].send("close")
        workers[1].expect(closed=True)
        seen = scraper.scrape()
        assert state(seen, "shared")["forced_open"] == 0.0
        assert state(seen, "shared")["open"] == 1.0
        assert transitions(seen, "shared", "closed", "forced_open") == 1.0
    finally:
        scraper.close()
        for worker in workers:
            if worker.process.poll() is None:
                worker.exit()


def test_our_collector_drops_a_dead_workers_state_without_mark_process_dead(tmp_path):
    workers = [
        Worker(tmp_path, k, final, "asyncio") for k, final in enumerate(["open", "disabled"])
    ]
    try:
        for worker in workers:
            worker.expect(ready=True)
        seen = ours(tmp_path)
        assert state(seen, "shared")["open"] == 1.0
        assert state(seen, "shared")["disabled"] == 1.0
        assert selfmetric(seen, "fluxgate_stream_consumer_running") == 2.0

        # A worker dies and nobody calls mark_process_dead (uvicorn --workers has no hook). Not
        # reaped yet, it is a zombie: exited, so it counts no more.
        dead = workers.pop()
        dead.process.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, dead.pid, os.WEXITED | os.WNOWAIT)
        assert state(collected(tmp_path), "shared")["disabled"] == 1.0  # prometheus_client's
        seen = ours(tmp_path)
        assert state(seen, "shared")["disabled"] == 0.0
        assert state(seen, "shared")["open"] == 1.0
        assert state(seen, "w1") == dict.fromkeys(ALL_STATES)  # its own circuit has no series
        assert selfmetric(seen, "fluxgate_stream_consumer_running") == 1.0
        # Its counters stay: totals and rate() do not go back when a worker dies.
        assert transitions(seen, "shared", "closed", "disabled") == 1.0
        assert transitions(seen, "shared", "closed", "open") == 10 + 11 + 1
        assert transitions(seen, "w1", "open", "half_open") == 5
        assert not list(tmp_path.glob(f"gauge_live*_{dead.pid}.db"))  # as mark_process_dead does
        assert list(tmp_path.glob(f"counter_{dead.pid}.db"))
        assert state(collected(tmp_path), "shared")["disabled"] == 0.0
        dead.process.communicate(timeout=30)
        assert ours(tmp_path) == seen
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.exit()


def test_our_collector_drops_every_exited_writers_state_and_keeps_their_counts(tmp_path):
    out = run_multiprocess_worker("fork_after_listener.py", tmp_path, "forks")
    assert out["parent"] != os.getpid()
    # The processes that wrote are gone: their live gauges go, their counters stay.
    seen = ours(tmp_path)
    assert state(seen, "preloaded") == dict.fromkeys(ALL_STATES)
    assert transitions(seen, "preloaded", "closed", "open") == 1.0
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        fluxgate_stream.MultiProcessCollector(CollectorRegistry(), path=str(tmp_path / "none"))


def ours(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What ``fluxgate_stream.MultiProcessCollector`` collects from ``directory``."""
    registry = CollectorRegistry()
    fluxgate_stream.MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


@pytest.fixture
def multiprocess_mode(tmp_path, monkeypatch):
    """prometheus_client in its real multiprocess mode, writing to ``tmp_path``, for one test."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    value_class = values.MultiProcessValue()
    monkeypatch.setattr(values, "ValueClass", value_class)
    assert multiprocess()
    yield tmp_path
    # close_all_files() is new in prometheus-client 0.26; before it the files stay open until exit.
    close_all_files = getattr(value_class, "close_all_files", None)
    if close_all_files is not None:
        close_all_files()


def collected(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


OPEN = Signal("closed", "open", 0.0)


def test_multiprocess_close_zeroes_this_process_and_warns_nothing(multiprocess_mode, request):
    name = f"mp_close_{request.node.name}"
    listener = PrometheusListener(name, CollectorRegistry())
    listener(OPEN)
    assert state(collected(multiprocess_mode), name)["open"] == 1.0
    listener.close()  # no "not implemented in multi-process mode" warning: warnings are errors
    seen = collected(multiprocess_mode)
    assert state(seen, name) == dict.fromkeys(ALL_STATES, 0.0)
    assert transitions(seen, name, "closed", "open") == 1.0
    listener.close()  # idempotent
    listener(Signal("open", "half_open", 0.0))  # back on the next transition
    seen = collected(multiprocess_mode)
    assert state(seen, name)["half_open"] == 1.0
    assert sum(v or 0 for v in state(seen, name).values()) == 1.0
    assert transitions(seen, name, "closed", "open") == 1.0  # never reset in this mode


def test_multiprocess_registries_share_one_family_and_one_cap(multiprocess_mode, request):
    name = f"mp_shared_{request.node.name}"
    first = PrometheusListener(name, CollectorRegistry())
    second = PrometheusListener(name, CollectorRegistry())
    assert first._target is second._target  # the files know no registries
    first(OPEN)
    second(OPEN)
    assert transitions(collected(multiprocess_mode), name, "closed", "open") == 2.0
    limit_circuits(1, CollectorRegistry())
    with pytest.raises(ValueError, match=r"^this registry already has 1 circuit names, its limit"):
        PrometheusListener(f"{name}_other", CollectorRegistry())


def test_multiprocess_own_transitions_start_at_zero_in_the_files(multiprocess_mode, request):
    name = f"mp_zeros_{request.node.name}"
    listener = PrometheusListener(name, CollectorRegistry())
    seen = collected(multiprocess_mode)
    assert [transitions(seen, name, old, new) for old, new in OWN_TRANSITIONS] == [0.0] * 4
    assert transitions(seen, name, "closed", "forced_open") is None
    listener(OPEN)
    listener.close()  # counters keep their totals in this mode; the zeros stay with them
    seen = collected(multiprocess_mode)
    assert [transitions(seen, name, old, new) for old, new in OWN_TRANSITIONS] == [1.0, 0, 0, 0]
    quiet = f"{name}_none"
    PrometheusListener(quiet, CollectorRegistry(), initial_state=None)
    assert not [key for key in collected(multiprocess_mode) if ("circuit_name", quiet) in key[1]]


@pytest.mark.anyio
async def test_multiprocess_self_metrics_are_published_not_collected(
    anyio_backend, multiprocess_mode
):
    registry = CollectorRegistry()
    pipeline = SignalPipeline(max_buffer_size=2)
    listener = PrometheusListener(f"mp_self_{anyio_backend}", registry, pipeline=pipeline)
    metrics = export_metrics(pipeline, registry, name=f"mp_{anyio_backend}")
    assert metrics.multiprocess
    assert list(registry.collect()) == []  # a custom collector would never be scraped

    def read(metric: str, **labels: str) -> float | None:
        key = (metric, tuple(sorted({"pipeline": f"mp_{anyio_backend}", **labels}.items())))
        return collected(multiprocess_mode).get(key)

    async with Consumer(pipeline), anyio.create_task_group() as tg:
        await tg.start(lambda task_status: metrics.run(interval=3600, task_status=task_status))
        assert read("fluxgate_stream_consumer_running") == 1.0  # published when started
        assert read("fluxgate_stream_buffer_size") == 2.0
        for _ in range(10):
            listener(OPEN)
        await pipeline.flush()
        assert read("fluxgate_stream_signals_total", path="stream") == 0.0  # not yet
        metrics.publish()
        taken = [read("fluxgate_stream_signals_total", path=p) or 0 for p in ("stream", "overflow")]
        assert sum(taken) == 10
        metrics.publish()  # counters grow by the difference only
        assert (
            sum(read("fluxgate_stream_signals_total", path=p) or 0 for p in ("stream", "overflow"))
            == 10
        )
        tg.cancel_scope.cancel()  # run() publishes once more on its way out
    listener(OPEN)
    metrics.publish()
    assert read("fluxgate_stream_consumer_running") == 0.0
    assert read("fluxgate_stream_signals_total", path="direct") == 1.0
    # Another pipeline under the same name starts its counts afresh, on top of the old ones.
    other = export_metrics(SignalPipeline(), registry, name=f"mp_{anyio_backend}")
    PrometheusListener(f"mp_self_{anyio_backend}", registry, pipeline=other.pipeline)(OPEN)
    other.publish()
    assert read("fluxgate_stream_signals_total", path="direct") == 2.0


# -- fork: gunicorn --preload, multiprocessing's fork start method --------------------------------


def rows(directory: Path, pid: int, name: str) -> dict[str, float]:
    """The state rows that process ``pid`` wrote for circuit ``name`` (its own file alone)."""
    files = [str(directory / f"gauge_livesum_{pid}.db")]
    found = {
        sample.labels["state"]: sample.value
        for family in MultiProcessCollector.merge([f for f in files if Path(f).exists()])
        for sample in family.samples
        if sample.name == "circuit_breaker_state" and sample.labels["circuit_name"] == name
    }
    return {state: value for state, value in found.items() if value}


def test_a_forked_child_counts_in_its_state_from_the_start_and_the_parent_stops(tmp_path):
    # The parent created both listeners (closed; then "tripped" opened) and forked two children:
    # one by os.fork() that did nothing, one by multiprocessing's fork context that moved
    # "tripped" to half_open. Then the parent tripped "preloaded".
    out = run_multiprocess_worker("fork_after_listener.py", tmp_path, "forks")
    parent, (first, second) = out["parent"], out["children"]
    assert rows(tmp_path, first, "preloaded") == {"closed": 1.0}  # counted from the start
    assert rows(tmp_path, first, "tripped") == {"open": 1.0}
    assert rows(tmp_path, second, "preloaded") == {"closed": 1.0}
    assert rows(tmp_path, second, "tripped") == {"half_open": 1.0}  # and moves on from there
    # The parent stopped counting when it forked, until its own next transition.
    assert rows(tmp_path, parent, "tripped") == {}
    assert rows(tmp_path, parent, "preloaded") == {"open": 1.0}
    seen = collected(tmp_path)
    assert state(seen, "preloaded") == {
        **dict.fromkeys(ALL_STATES, 0.0),
        "closed": 2.0,
        "open": 1.0,
    }
    assert state(seen, "tripped") == {
        **dict.fromkeys(ALL_STATES, 0.0),
        "open": 1.0,
        "half_open": 1.0,
    }
    # A child's counters start at 0 in its own files: nothing of the parent's is counted twice.
    assert transitions(seen, "tripped", "closed", "open") == 1.0
    assert transitions(seen, "tripped", "open", "half_open") == 1.0
    assert transitions(seen, "preloaded", "closed", "open") == 1.0


def test_fork_in_single_process_mode_changes_nothing():
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = run_python(CHILDREN / "fork_after_listener.py", "forks", env=env)
    parent, first, second = json.loads(result.stdout)["views"]
    assert parent == {
        "preloaded": {"closed": 0.0, "open": 1.0, "half_open": 0.0},
        "tripped": {"closed": 0.0, "open": 1.0, "half_open": 0.0},
    }
    assert first == {
        "preloaded": {"closed": 1.0, "open": 0.0, "half_open": 0.0},
        "tripped": {"closed": 0.0, "open": 1.0, "half_open": 0.0},
    }
    assert second["tripped"] == {"closed": 0.0, "open": 0.0, "half_open": 1.0}


def test_a_fork_hook_that_fails_breaks_neither_the_fork_nor_the_parent(tmp_path):
    # The child cannot open its metric files; the hooks were registered before a reload of
    # their module, and must run once.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = run_python(CHILDREN / "fork_after_listener.py", "broken", env=env)
    out = json.loads(result.stdout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [
        "ERROR fluxgate-stream could not move the state gauge in the child after os.fork()"
    ]
    assert "child forked" in result.stderr
    assert "FileNotFoundError" in result.stderr
    assert rows(tmp_path, out["parent"], "preloaded") == {"open": 1.0}


def fork_and_reap() -> None:
    """A real ``os.fork()`` of this process; the child leaves at once, the parent reaps it."""
    with warnings.catch_warnings():
        # Python >= 3.12 warns about forking a process with threads: the child only exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover  # the child
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0


def test_this_process_stops_counting_when_it_forks_until_its_next_transition(
    multiprocess_mode, request
):
    name = f"mp_fork_{request.node.name}"
    listener = PrometheusListener(name, CollectorRegistry())
    mine = MultiProcessCollector.merge([str(multiprocess_mode / f"gauge_livesum_{os.getpid()}.db")])

    def shown() -> dict[str, float]:
        return {
            sample.labels["state"]: sample.value
            for family in MultiProcessCollector.merge(
                [str(multiprocess_mode / f"gauge_livesum_{os.getpid()}.db")]
            )
            for sample in family.samples
            if sample.labels.get("circuit_name") == name and sample.value
        }

    assert mine
    assert shown() == {"closed": 1.0}
    fork_and_reap()
    assert shown() == {}  # the forking process counts in no state
    fork_and_reap()
    assert shown() == {}
    listener(Signal("closed", "open", 0.0))
    listener(Signal("open", "closed", 0.0))  # back where it was: all six rows written again
    assert shown() == {"closed": 1.0}
    # Each child counted as closed from its start (its own files); they have exited since, so
    # only prometheus_client's collector still counts them.
    every = dict.fromkeys(ALL_STATES, 0.0)
    assert state(collected(multiprocess_mode), name) == {**every, "closed": 3.0}
    assert state(ours(multiprocess_mode), name) == {**every, "closed": 1.0}


def test_a_failing_fork_hook_in_the_parent_is_logged_and_the_fork_goes_on(
    multiprocess_mode, request, caplog
):
    PrometheusListener(f"mp_fork_fail_{request.node.name}", CollectorRegistry())
    close_all_files = getattr(values.ValueClass, "close_all_files", None)
    if close_all_files is None:
        pytest.skip("prometheus-client < 0.26 cannot close its files")
    close_all_files()  # the parent's next write to the state gauge fails
    fork_and_reap()
    assert [r.getMessage() for r in caplog.records] == [
        "fluxgate-stream could not move the state gauge in the parent after os.fork()"
    ]
    PrometheusListener(f"mp_fork_after_{request.node.name}", CollectorRegistry())  # lock released


def test_our_collector_leaves_out_a_dead_workers_file_it_cannot_remove(tmp_path, caplog):
    gone = run_python("-c", "import os; print(os.getpid())").stdout.strip()  # exited, reaped
    (tmp_path / f"gauge_livesum_{gone}.db").mkdir()  # unlink() fails on a directory
    MmapedDict(str(tmp_path / "gauge_livesum_custom-id.db")).close()  # no pid: never dropped
    collector = fluxgate_stream.MultiProcessCollector(None, path=str(tmp_path))
    assert list(collector.collect()) == []  # the directory was not read as a file
    assert list(collector.collect()) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot remove {tmp_path / f'gauge_livesum_{gone}.db'}, the live gauges of process "
        f"{gone}, which no longer exists: [Errno 21] Is a directory: "
        f"'{tmp_path / f'gauge_livesum_{gone}.db'}'; it is left out of the merged metrics"
    ]
    assert (tmp_path / "gauge_livesum_custom-id.db").exists()


def test_a_forked_child_publishes_only_its_own_self_metrics(tmp_path):
    # The child inherits the parent's statistics; what the parent counted before the fork is the
    # parent's to publish. Published again by the child, it is counted twice in the sum (and N
    # times by N workers forked from a --preload master).
    out = run_multiprocess_worker("fork_with_self_metrics.py", tmp_path)
    assert out == {"child_exit": 0}
    seen = ours(tmp_path)
    key = (
        "fluxgate_stream_signals_total",
        (("path", "direct"), ("pipeline", "forked")),
    )
    assert seen[key] == 8.0
    batches = ("fluxgate_stream_batches_total", (("pipeline", "forked"),))
    assert seen[batches] == 8.0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_metered_calls_are_file_backed_and_summed_over_workers(tmp_path, backend):
    """meter_calls() in real worker processes: counters and histogram merged by the collector."""
    workers = [
        run_multiprocess_worker(
            "meter_calls_in_a_multiprocess_worker.py", tmp_path, str(k), backend
        )
        for k in (1, 2, 3)
    ]
    assert len({worker["pid"] for worker in workers}) == 3
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    for name in ("async", "sync"):
        counts = {
            kind: registry.get_sample_value(
                "circuit_breaker_calls_total", {"circuit_name": name, "kind": kind}
            )
            for kind in ("successful", "failed", "ignored", "not_permitted", "cancelled")
        }
        # Workers 1, 2, 3 made k + 1 successes and k failures each.
        assert counts == {
            "successful": 9.0,
            "failed": 6.0,
            "ignored": 0.0,
            "not_permitted": 0.0,
            "cancelled": 0.0,
        }
        for kind, n in (("successful", 9.0), ("failed", 6.0)):
            labels = {"circuit_name": name, "kind": kind}
            assert (
                registry.get_sample_value("circuit_breaker_call_duration_seconds_count", labels)
                == n
            )
            assert (
                registry.get_sample_value(
                    "circuit_breaker_call_duration_seconds_bucket", {**labels, "le": "+Inf"}
                )
                == n
            )
    # The async meter's own buckets: every call took less than 60 s.
    assert (
        registry.get_sample_value(
            "circuit_breaker_call_duration_seconds_bucket",
            {"circuit_name": "async", "kind": "successful", "le": "60.0"},
        )
        == 9.0
    )
