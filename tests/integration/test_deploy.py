"""The shipped deploy/ files: the generated Grafana dashboard and the Prometheus rules and config.

The dashboard's queries, and the rules, are also run against a live Prometheus in
``test_prometheus_e2e.py``; here we check the files themselves, and run ``promtool`` (tests
marked ``prometheus``: they need Debian's ``prometheus`` package, like the end-to-end tests).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fluxgate_stream import ALL_STATES, health
from fluxgate_stream.time_in_state import SECONDS_NAME

from ..support.processes import run_python
from ..support.prom import DEPLOY, require_module, require_tool

GRAFANA = DEPLOY / "grafana"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = GRAFANA / "fluxgate-stream.json"


def require_sdk() -> None:
    """Skip before Python 3.11, which the SDK needs; elsewhere it must be installed."""
    if sys.version_info < (3, 11):
        pytest.skip("grafana-foundation-sdk needs Python >= 3.11")
    require_module("grafana_foundation_sdk", "grafana-foundation-sdk")


def load_generator() -> ModuleType:
    """Import ``deploy/grafana/dashboard.py`` (it needs grafana-foundation-sdk)."""
    require_sdk()
    spec = importlib.util.spec_from_file_location("fluxgate_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> dict[str, dict[str, Any]]:
    """The dashboard's panels (rows excluded) by title."""
    found = {p["title"]: p for p in board()["panels"] if p["type"] != "row"}
    assert len(found) == 11, sorted(found)
    return found


def promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own fixed argument list
        [require_tool("promtool"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


# -- the dashboard ------------------------------------------------------------------------------


def test_committed_dashboard_json_is_what_the_generator_writes():
    generator = load_generator()
    assert DASHBOARD.read_text(encoding="utf-8") == generator.render(), (
        "deploy/grafana/fluxgate-stream.json is out of date: "
        "run .venv/bin/python deploy/grafana/dashboard.py"
    )


def test_generator_check_mode_reports_a_stale_file_and_rewrites_it(tmp_path, monkeypatch, capsys):
    generator = load_generator()
    target = tmp_path / "fluxgate-stream.json"
    monkeypatch.setattr(generator, "OUTPUT", target)
    target.write_text("{}\n", encoding="utf-8")

    assert generator.main(["--check"]) == 1
    assert capsys.readouterr().err == f"{target} is out of date: run python dashboard.py\n"

    assert generator.main([]) == 0
    assert capsys.readouterr().out == f"wrote {target}\n"
    assert target.read_text(encoding="utf-8") == DASHBOARD.read_text(encoding="utf-8")
    assert generator.main(["--check"]) == 0


def test_generator_runs_as_a_script_in_check_mode():
    require_sdk()
    result = run_python(GRAFANA / "dashboard.py", "--check", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dashboard_has_the_spec_pages_three_panels():
    by_title = panels()

    open_circuits = by_title["Currently Open Circuits"]
    assert open_circuits["type"] == "stat"
    assert [t["expr"] for t in open_circuits["targets"]] == [
        'sum(circuit_breaker_state{state="open"})'
    ]
    defaults = open_circuits["fieldConfig"]["defaults"]
    assert defaults["unit"] == "none"
    assert defaults["thresholds"] == {
        "mode": "absolute",
        "steps": [
            {"color": "green", "value": None},
            {"color": "orange", "value": 1},
            {"color": "red", "value": 5},
        ],
    }

    trip_rate = by_title["Circuit Trip Rate (5m)"]
    assert trip_rate["type"] == "timeseries"
    (target,) = trip_rate["targets"]
    assert target["expr"] == (
        'sum(rate(circuit_breaker_state_transition_total{new_state="open"}[5m])) by (circuit_name)'
    )
    assert target["legendFormat"] == "{{circuit_name}}"
    assert trip_rate["fieldConfig"]["defaults"]["unit"] == "suffix: transitions/s"

    overview = by_title["Circuit State Overview"]
    assert overview["type"] == "piechart"
    (target,) = overview["targets"]
    assert target["expr"] == "sum(circuit_breaker_state) by (state)"
    assert target["legendFormat"] == "{{state}}"
    assert overview["fieldConfig"]["defaults"]["unit"] == "none"
    assert overview["options"]["reduceOptions"]["values"] is True  # "All values"


def test_dashboard_adds_a_state_timeline_and_a_transitions_table():
    by_title = panels()

    timeline = by_title["Circuit state timeline"]
    assert timeline["type"] == "state-timeline"
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    assert mapping["type"] == "value"
    assert {int(code): m["text"] for code, m in mapping["options"].items()} == dict(
        enumerate(ALL_STATES)
    )
    (target,) = timeline["targets"]
    assert target["legendFormat"] == "{{circuit_name}}"
    # One term per state, each turning that state's gauge into its code.
    for code, state in enumerate(ALL_STATES):
        assert f'state="{state}", circuit_name=~"$circuit"}} == 1) * {code})' in target["expr"]
    assert target["expr"].count(" or ") == len(ALL_STATES) - 1

    transitions = by_title["State transitions in the time range"]
    assert transitions["type"] == "table"
    (target,) = transitions["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    assert "[$__range]" in target["expr"]
    assert "by (circuit_name, old_state, new_state)" in target["expr"]


def test_dashboard_adds_a_health_row_read_from_the_breakers_at_scrape_time():
    dashboard = board()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-2] == "Health at scrape time: $circuit"
    by_title = panels()
    selected = 'circuit_name=~"$circuit"'

    def only_target(title: str) -> dict[str, Any]:
        (target,) = by_title[title]["targets"]
        return target

    failure = by_title["Failure rate (window)"]
    assert failure["type"] == "timeseries"
    assert only_target("Failure rate (window)")["expr"] == (
        f"max by (circuit_name) (circuit_breaker_failure_rate_ratio{{{selected}}})"
    )
    assert only_target("Failure rate (window)")["legendFormat"] == "{{circuit_name}}"
    defaults = failure["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    slow = by_title["Slow-call rate (window)"]
    assert slow["type"] == "timeseries"
    target = only_target("Slow-call rate (window)")
    assert target["expr"] == (
        "max by (circuit_name, threshold_seconds) "
        f"(circuit_breaker_slow_call_rate_ratio{{{selected}}})"
    )
    assert target["legendFormat"] == "{{circuit_name}} >= {{threshold_seconds}} s"
    assert slow["fieldConfig"]["defaults"]["unit"] == "percentunit"

    latency = by_title["Average call latency (window)"]
    assert latency["type"] == "timeseries"
    assert only_target("Average call latency (window)")["expr"] == (
        f"max by (circuit_name) (circuit_breaker_average_latency_seconds{{{selected}}})"
    )
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"

    since = by_title["Time since the last transition"]
    assert since["type"] == "bargauge"
    target = only_target("Time since the last transition")
    assert target["expr"] == (
        "time() - max by (circuit_name) "
        f"(circuit_breaker_last_transition_timestamp_seconds{{{selected}}})"
    )
    assert target["instant"] is True
    assert since["fieldConfig"]["defaults"]["unit"] == "s"


def test_the_health_panels_query_only_metrics_the_health_module_exports():
    exported = {name for name, _help, _labels in health.FAMILIES}
    by_title = panels()
    for title in (
        "Failure rate (window)",
        "Slow-call rate (window)",
        "Average call latency (window)",
        "Time since the last transition",
    ):
        (target,) = by_title[title]["targets"]
        used = set(re.findall(r"circuit_breaker_\w+", target["expr"]))
        assert used, title
        assert used <= exported, (title, used - exported)


def test_dashboard_adds_a_time_in_state_row():
    dashboard = board()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == "Time in state: $circuit"
    by_title = panels()
    selected = 'circuit_name=~"$circuit"'

    time_open = by_title["Fraction of time open (5m)"]
    assert time_open["type"] == "timeseries"
    (target,) = time_open["targets"]
    assert target["expr"] == (
        "max by (circuit_name) "
        f'(rate(circuit_breaker_state_seconds_total{{state="open", {selected}}}[5m]))'
    )
    defaults = time_open["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    in_state = by_title["Time in each state over the time range"]
    assert in_state["type"] == "bargauge"
    (target,) = in_state["targets"]
    assert target["expr"] == (
        "sum by (circuit_name, state) "
        f"(increase(circuit_breaker_state_seconds_total{{{selected}}}[$__range])) > 0"
    )
    assert target["instant"] is True
    assert target["legendFormat"] == "{{circuit_name}}: {{state}}"
    assert in_state["fieldConfig"]["defaults"]["unit"] == "s"
    # both query the metric that time_in_state=True exports
    for panel in (time_open, in_state):
        (target,) = panel["targets"]
        assert set(re.findall(r"circuit_breaker_\w+", target["expr"])) == {f"{SECONDS_NAME}_total"}


def test_timeline_shows_the_most_severe_state_first():
    generator = load_generator()
    assert sorted(generator.SEVERITY) == sorted(ALL_STATES)
    assert generator.SEVERITY[:2] == ("open", "forced_open")
    assert generator.SEVERITY[-1] == "closed"


def test_every_query_uses_the_datasource_variable():
    dashboard = board()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    circuit = variables["circuit"]
    assert (circuit["type"], circuit["multi"], circuit["includeAll"], circuit["allValue"]) == (
        "query",
        True,
        True,
        ".*",
    )
    ref = {"type": "prometheus", "uid": "${datasource}"}
    assert circuit["datasource"] == ref
    for panel in panels().values():
        assert panel["datasource"] == ref, panel["title"]
        assert all(t["datasource"] == ref for t in panel["targets"]), panel["title"]


def test_dashboard_ids_are_unique_and_the_uid_is_stable():
    dashboard = board()
    ids = [p["id"] for p in dashboard["panels"]]
    assert ids == list(range(1, 16))
    assert dashboard["uid"] == "fluxgate-stream"
    assert "id" not in dashboard  # importing creates a new dashboard, keyed by uid


# -- the Prometheus rules and config ---------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_checks_the_alerting_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Checking alerts.yml\n  SUCCESS: 5 rules found\n\n"


@pytest.mark.prometheus
def test_promtool_unit_tests_of_the_alerting_rules_pass():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "Unit Testing:  alerts_test.yml\n  SUCCESS\n\n"


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("change", "alert"),
    [
        (("> 3", "> 4"), "CircuitBreakerFlapping"),
        (("for: 5m", "for: 6m"), "CircuitBreakerOpen"),
        (('state=~"open|half_open"', 'state="open"'), "CircuitBreakerOpen"),
        (('state=~"disabled|metrics_only"', 'state="disabled"'), "CircuitBreakerProtectionOff"),
    ],
)
def test_the_rules_unit_tests_catch_a_changed_rule(tmp_path, change, alert):
    rules = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    old, new = change
    assert rules.count(old) == 1
    (tmp_path / "alerts.yml").write_text(rules.replace(old, new), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)

    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)

    assert result.returncode == 1
    assert f"alertname: {alert}" in result.stdout + result.stderr


@pytest.mark.prometheus
def test_promtool_checks_the_sample_config_and_the_rules_it_loads():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Checking prometheus.yml\n"
        "  SUCCESS: 1 rule files found\n"
        " SUCCESS: prometheus.yml is valid prometheus config file syntax\n"
        "\n"
        "Checking alerts.yml\n"
        "  SUCCESS: 5 rules found\n"
        "\n"
    )
