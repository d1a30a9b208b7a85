"""``os.fork()`` with a consumer running in the parent: the child's pipeline is stopped and usable.

Real forks, in a child interpreter (``tests/children/fork_with_a_running_consumer.py``): the
parent's consumer runs on its own thread, which the child does not have.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from ..support.processes import CHILDREN, importing_tests, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork() here")


def reports(script: str, backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a forking child script; return the reports it printed: the child's, the parent's."""
    result = run_python(CHILDREN / script, backend, timeout=60, env=importing_tests())
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    child = next(line["child"] for line in lines if "child" in line)
    parent = next(line["parent"] for line in lines if "parent" in line)
    return child, parent


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_child_forked_while_the_consumer_runs_applies_directly_flushes_and_consumes(backend):
    child, parent = reports("fork_with_a_running_consumer.py", backend)
    # The child: no consumer; the metrics as the parent had applied them at the fork (3), and
    # nothing of the parent's queue (10 signals in the bridge and the overflow queue) applied.
    assert child["running"] is False
    assert child["inherited"] == 3.0
    assert child["stats"]["queued"] == 0
    assert child["stats"]["running"] == 0
    assert child["direct"] == 4.0  # a listener call applies in the call
    assert child["flush"] is None  # flush() returns
    assert child["run"] is None  # a new consumer starts, carries 150 signals and stops
    assert child["consumed"] == [104.0, 50.0]
    assert child["after"] == ["closed", 51.0]  # direct again once it stopped
    assert child["stats_after"]["queued"] == 0
    # The parent: its own queue applied, once, by its own consumer; the child exited cleanly.
    assert parent["count"] == 13.0
    assert parent["stats"]["queued"] == 0
    assert parent["child_exit"] == 0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_calls_queued_on_the_loop_thread_at_a_fork_are_the_parents_alone(backend):
    child, parent = reports("fork_with_queued_calls.py", backend)
    # The child: the five calls its parent had queued are not its own (the parent counts them);
    # its own two (direct) and three (through a new consumer) count, at once and exactly.
    assert child == {"inherited": 0.0, "direct": 2.0, "flushed": 5.0, "stopped": 5.0}
    assert parent == {"count": 5.0, "child_exit": 0}
