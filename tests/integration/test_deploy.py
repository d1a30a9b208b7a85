"""The shipped deploy/ files: the generated Grafana dashboard, the Prometheus rules and config,
and the Kubernetes PrometheusRule generated from the rules.

The dashboard's queries, and the rules, are also run against a live Prometheus in
``test_prometheus_e2e.py``; here we check the files themselves, and run ``promtool`` (tests
marked ``prometheus``: they need Debian's ``prometheus`` package, like the end-to-end tests):
the rules' unit tests, and every dashboard query on multi-worker and fleet inputs.

What the state gauge means, which every query must respect: circuit_breaker_state counts
processes. A single-process app reads 0 or 1; in prometheus_client's multiprocess mode each live
worker adds 1 to the state its breaker is in (3 workers open read 3); a fleet is several
instances, told apart by their ``job`` and ``instance`` labels.
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
import yaml
from markdown.extensions.toc import slugify

from fluxgate_stream import ALL_STATES, health
from fluxgate_stream._catalogue import CALL_DURATION, CALLS, SHADOW_TRIPS, TRIPS
from fluxgate_stream.time_in_state import SECONDS_NAME

from ..support.processes import run_python
from ..support.prom import DEPLOY, ROOT, require_module, require_tool

GRAFANA = DEPLOY / "grafana"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES = DEPLOY / "kubernetes"
DASHBOARD = GRAFANA / "fluxgate-stream.json"
MANIFEST = KUBERNETES / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
SOURCE_URL = re.search(  # the project's URL, as pyproject.toml states it (no tomllib on 3.10)
    r'^Source = "(.+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), flags=re.M
)[1]
TARGETS = 'job=~"$job", instance=~"$instance"'
SELECTED = f'{TARGETS}, circuit_name=~"$circuit"'


def require_sdk() -> None:
    """Skip before Python 3.11, which the SDK needs; elsewhere it must be installed."""
    if sys.version_info < (3, 11):
        pytest.skip("grafana-foundation-sdk needs Python >= 3.11")
    require_module("grafana_foundation_sdk", "grafana-foundation-sdk")


def load_script(path: Path) -> ModuleType:
    """Import one of deploy/'s generator scripts by path."""
    spec = importlib.util.spec_from_file_location(f"fluxgate_deploy_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_generator() -> ModuleType:
    """Import ``deploy/grafana/dashboard.py`` (it needs grafana-foundation-sdk)."""
    require_sdk()
    return load_script(GRAFANA / "dashboard.py")


def load_kubernetes_generator() -> ModuleType:
    """Import ``deploy/kubernetes/generate.py``."""
    return load_script(KUBERNETES / "generate.py")


# Each generator's loader and the file it writes, beside the script.
GENERATORS = [
    pytest.param((load_generator, DASHBOARD, "dashboard.py"), id="dashboard"),
    pytest.param((load_kubernetes_generator, MANIFEST, "generate.py"), id="kubernetes"),
]


def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> dict[str, dict[str, Any]]:
    """The dashboard's panels (rows excluded) by title."""
    found = {p["title"]: p for p in board()["panels"] if p["type"] != "row"}
    assert len(found) == 18, sorted(found)
    return found


def query_key(title: str, panel: dict[str, Any], target: dict[str, Any]) -> str:
    """A query's key: its panel's title, with its refId for a panel of several queries."""
    return title if len(panel["targets"]) == 1 else f"{title} [{target['refId']}]"


def targets() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Every panel query, by ``query_key``: (its panel, the query)."""
    return {
        query_key(title, panel, target): (panel, target)
        for title, panel in panels().items()
        for target in panel["targets"]
    }


def exprs() -> dict[str, str]:
    """Every panel query's expression, by ``query_key``."""
    return {key: target["expr"] for key, (_panel, target) in targets().items()}


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rules file, groups flattened."""
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    """The alerting rules of alerts.yml, by name."""
    return {rule["alert"]: rule for rule in rules(PROMETHEUS / "alerts.yml")}


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


@pytest.mark.parametrize("case", GENERATORS)
def test_generator_check_mode_reports_a_stale_file_and_rewrites_it(
    tmp_path, monkeypatch, capsys, case
):
    load, committed, script = case
    generator = load()
    target = tmp_path / committed.name
    monkeypatch.setattr(generator, "OUTPUT", target)
    assert generator.main(["--check"]) == 1  # missing
    target.write_text("{}\n", encoding="utf-8")

    assert generator.main(["--check"]) == 1  # stale
    assert capsys.readouterr().err == f"{target} is out of date: run python {script}\n" * 2

    assert generator.main([]) == 0
    assert capsys.readouterr().out == f"wrote {target}\n"
    assert target.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")
    assert generator.main(["--check"]) == 0


@pytest.mark.parametrize("case", GENERATORS)
def test_generator_runs_as_a_script_in_check_mode(case):
    load, committed, script = case
    load()  # skips the dashboard's where its SDK cannot be installed
    result = run_python(committed.parent / script, "--check", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_dashboard_has_the_spec_pages_three_panels_right_for_workers_and_fleets():
    by_title = panels()

    open_circuits = by_title["Currently Open Circuits"]
    assert open_circuits["type"] == "stat"
    # Circuits open in at least one process: 3 workers open count once (the spec's
    # sum(circuit_breaker_state{state="open"}) counts 3).
    assert [t["expr"] for t in open_circuits["targets"]] == [
        f'count(sum by (job, circuit_name) (circuit_breaker_state{{state="open", {TARGETS}}}) > 0)'
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

    trip_rate = by_title["Circuit Trip Rate"]
    assert trip_rate["type"] == "timeseries"
    (target,) = trip_rate["targets"]
    assert target["expr"] == (
        "sum by (job, circuit_name) (rate(circuit_breaker_state_transition_total"
        f'{{new_state="open", {TARGETS}}}[$__rate_interval]))'
    )
    assert target["legendFormat"] == "{{circuit_name}} ({{job}})"
    assert trip_rate["fieldConfig"]["defaults"]["unit"] == "suffix: transitions/s"

    overview = by_title["Circuit State Overview"]
    assert overview["type"] == "piechart"
    (target,) = overview["targets"]
    assert target["expr"] == f"sum by (state) (circuit_breaker_state{{{TARGETS}}})"
    assert target["legendFormat"] == "{{state}}"
    assert overview["fieldConfig"]["defaults"]["unit"] == "none"
    assert overview["options"]["reduceOptions"]["values"] is True  # "All values"


def test_dashboard_adds_a_state_timeline_a_share_panel_and_a_transitions_table():
    generator = load_generator()
    by_title = panels()

    timeline = by_title["Circuit state timeline"]
    assert timeline["type"] == "state-timeline"
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    assert mapping["type"] == "value"
    # The severity rule's ranks, mapped back to the states: closed 0 ... open 5.
    assert {int(rank): m["text"] for rank, m in mapping["options"].items()} == dict(
        enumerate(reversed(generator.SEVERITY))
    )
    (target,) = timeline["targets"]
    assert target["legendFormat"] == "{{circuit_name}} ({{job}})"
    assert target["expr"] == (
        "max by (job, circuit_name) "
        f"(instance_circuit_name:circuit_breaker_state_severity:max{{{SELECTED}}})"
    )

    share = by_title["Share of processes in each state"]
    assert share["type"] == "timeseries"
    (target,) = share["targets"]
    assert target["expr"] == (
        "avg by (job, circuit_name, state) "
        f"(instance_circuit_name_state:circuit_breaker_state:ratio{{{SELECTED}}}) > 0"
    )
    assert target["legendFormat"] == "{{circuit_name}} ({{job}}): {{state}}"
    defaults = share["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    transitions = by_title["State transitions in the time range"]
    assert transitions["type"] == "table"
    (target,) = transitions["targets"]
    assert target["format"] == "table"
    assert target["instant"] is True
    assert "[$__range]" in target["expr"]
    assert "by (job, circuit_name, old_state, new_state)" in target["expr"]
    (organize, _sort) = transitions["transformations"]
    assert organize["options"]["renameByName"]["job"] == "Job"


def test_the_timeline_reads_the_severity_ranks_the_recording_rule_writes():
    """The rule spells each state's rank in PromQL, the dashboard maps ranks back: they agree."""
    generator = load_generator()
    (rule,) = [r for r in rules(PROMETHEUS / "rules.yml") if r["record"] == generator.SEVERITY_RULE]
    ranks = {
        state: int(rank or 0)
        for state, rank in re.findall(
            r'circuit_breaker_state\{state="(\w+)"\} > 0\) \* 0(?: \+ (\d))?', rule["expr"]
        )
    }
    assert ranks == {state: generator.severity_rank(state) for state in ALL_STATES}
    # In the rule's `or` chain the most severe state comes first, as in SEVERITY.
    assert list(ranks) == list(generator.SEVERITY)


def test_dashboard_adds_a_health_row_read_from_the_breakers_at_scrape_time():
    dashboard = board()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-3] == "Health at scrape time: $circuit"
    by_title = panels()

    def only_target(title: str) -> dict[str, Any]:
        (target,) = by_title[title]["targets"]
        return target

    # Health is read by a custom collector, per process: across instances, the worst one.
    failure = by_title["Failure rate (window)"]
    assert failure["type"] == "timeseries"
    assert only_target("Failure rate (window)")["expr"] == (
        f"max by (job, circuit_name) (circuit_breaker_failure_rate_ratio{{{SELECTED}}})"
    )
    assert only_target("Failure rate (window)")["legendFormat"] == "{{circuit_name}} ({{job}})"
    defaults = failure["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    slow = by_title["Slow-call rate (window)"]
    assert slow["type"] == "timeseries"
    target = only_target("Slow-call rate (window)")
    assert target["expr"] == (
        "max by (job, circuit_name, threshold_seconds) "
        f"(circuit_breaker_slow_call_rate_ratio{{{SELECTED}}})"
    )
    assert target["legendFormat"] == "{{circuit_name}} ({{job}}) >= {{threshold_seconds}} s"
    assert slow["fieldConfig"]["defaults"]["unit"] == "percentunit"

    latency = by_title["Average call latency (window)"]
    assert latency["type"] == "timeseries"
    assert only_target("Average call latency (window)")["expr"] == (
        f"max by (job, circuit_name) (circuit_breaker_average_latency_seconds{{{SELECTED}}})"
    )
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"

    since = by_title["Time since the last transition"]
    assert since["type"] == "bargauge"
    target = only_target("Time since the last transition")
    assert target["expr"] == (
        "time() - max by (job, circuit_name) "
        f"(circuit_breaker_last_transition_timestamp_seconds{{{SELECTED}}})"
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
    assert rows[-2] == "Time in state: $circuit"
    by_title = panels()

    time_open = by_title["Fraction of time open"]
    assert time_open["type"] == "timeseries"
    (target,) = time_open["targets"]
    assert target["expr"] == (
        "max by (job, circuit_name) "
        f'(rate(circuit_breaker_state_seconds_total{{state="open", {SELECTED}}}'
        "[$__rate_interval]))"
    )
    defaults = time_open["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    in_state = by_title["Time in each state over the time range"]
    assert_instant_bars(
        in_state,
        "sum by (job, circuit_name, state) "
        f"(increase(circuit_breaker_state_seconds_total{{{SELECTED}}}[$__range])) > 0",
        legend="{{circuit_name}} ({{job}}): {{state}}",
        unit="s",
    )
    # both query the metric that time_in_state=True exports
    for panel in (time_open, in_state):
        (target,) = panel["targets"]
        assert set(re.findall(r"circuit_breaker_\w+", target["expr"])) == {f"{SECONDS_NAME}_total"}


def assert_instant_bars(panel: dict[str, Any], expr: str, *, legend: str, unit: str) -> None:
    """``panel`` is a bar gauge of one instant query ``expr``, shown as ``legend`` in ``unit``."""
    assert panel["type"] == "bargauge"
    (target,) = panel["targets"]
    assert target["expr"] == expr
    assert target["instant"] is True
    assert target["legendFormat"] == legend
    assert panel["fieldConfig"]["defaults"]["unit"] == unit


def test_dashboard_adds_a_calls_row_read_from_the_call_metrics():
    dashboard = board()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows[-1] == "Calls: $circuit"
    by_title = panels()
    calls = f"circuit_breaker_calls_total{{{{{{kind}}{SELECTED}}}}}"

    def rate(kind: str = "") -> str:
        return f"sum by (job, circuit_name) (rate({calls.format(kind=kind)}[$__rate_interval]))"

    by_kind = by_title["Calls per second by kind"]
    assert by_kind["type"] == "timeseries"
    (target,) = by_kind["targets"]
    assert target["expr"] == (
        f"sum by (job, circuit_name, kind) (rate({calls.format(kind='')}[$__rate_interval]))"
    )
    assert target["legendFormat"] == "{{circuit_name}} ({{job}}): {{kind}}"
    assert by_kind["fieldConfig"]["defaults"]["unit"] == "suffix: calls/s"

    # not_permitted / every kind; failed / (successful + failed); no ratio of 0 / 0.
    rejected, failed, ran = (
        'kind="not_permitted", ',
        'kind="failed", ',
        'kind=~"successful|failed", ',
    )
    for title, expr in (
        ("Rejection ratio", f"{rate(rejected)} / ({rate()} > 0)"),
        ("Failure ratio", f"{rate(failed)} / ({rate(ran)} > 0)"),
    ):
        panel = by_title[title]
        (target,) = panel["targets"]
        assert target["expr"] == expr, title
        assert target["legendFormat"] == "{{circuit_name}} ({{job}})", title
        defaults = panel["fieldConfig"]["defaults"]
        assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)

    latency = by_title["Call latency (p50, p95, p99)"]
    assert latency["type"] == "timeseries"
    assert latency["fieldConfig"]["defaults"]["unit"] == "s"
    assert [(t["refId"], t["expr"], t["legendFormat"]) for t in latency["targets"]] == [
        (
            ref_id,
            f"histogram_quantile({quantile}, sum by (job, circuit_name, le) "
            f"(rate(circuit_breaker_call_duration_seconds_bucket{{{SELECTED}}}"
            "[$__rate_interval])))",
            f"{{{{circuit_name}}}} ({{{{job}}}}) p{percentile}",
        )
        for ref_id, quantile, percentile in (("A", 0.5, 50), ("B", 0.95, 95), ("C", 0.99, 99))
    ]

    assert_instant_bars(
        by_title["Trips by reason over the time range"],
        "round(sum by (job, circuit_name, reason) "
        f"(increase(circuit_breaker_trips_total{{{SELECTED}}}[$__range]))) > 0",
        legend="{{circuit_name}} ({{job}}): {{reason}}",
        unit="none",
    )
    assert_instant_bars(
        by_title["Shadow trips over the time range"],
        "round(sum by (job, circuit_name) "
        f"(increase(circuit_breaker_shadow_trips_total{{{SELECTED}}}[$__range]))) > 0",
        legend="{{circuit_name}} ({{job}})",
        unit="none",
    )


def test_the_calls_row_queries_only_the_metrics_meter_calls_exports():
    exported = {spec.sample for spec in (CALLS, TRIPS, SHADOW_TRIPS)}
    exported.add(f"{CALL_DURATION.sample}_bucket")
    row = [p for p in board()["panels"] if p["id"] > 17]
    assert len(row) == 6
    for panel in row:
        for target in panel["targets"]:
            used = set(re.findall(r"circuit_breaker_\w+", target["expr"]))
            assert used, panel["title"]
            assert used <= exported, (panel["title"], used - exported)


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
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels().values():
        assert panel["datasource"] == ref, panel["title"]
        assert all(t["datasource"] == ref for t in panel["targets"]), panel["title"]


def test_the_job_instance_and_circuit_variables_list_label_values_each_within_the_last():
    variables = board()["templating"]["list"]
    assert [v["name"] for v in variables] == ["datasource", "job", "instance", "circuit"]
    ref = {"type": "prometheus", "uid": "${datasource}"}
    queries = {}
    for variable in variables[1:]:
        name = variable["name"]
        assert (variable["type"], variable["multi"], variable["includeAll"]) == (
            "query",
            True,
            True,
        ), name
        assert variable["allValue"] == ".*", name
        assert variable["current"]["value"] == "$__all", name
        assert variable["datasource"] == ref, name
        assert variable["refresh"] == 2, name  # on time range change
        queries[name] = variable["query"]
    assert queries == {
        "job": "label_values(circuit_breaker_state, job)",
        "instance": 'label_values(circuit_breaker_state{job=~"$job"}, instance)',
        "circuit": f"label_values(circuit_breaker_state{{{TARGETS}}}, circuit_name)",
    }


def test_every_panel_query_reads_only_the_selected_jobs_and_instances():
    for title, expr in exprs().items():
        selectors = re.findall(r"(\w+)\{([^}]*)\}", expr)
        assert selectors, title
        for metric, matchers in selectors:
            assert TARGETS in matchers, (title, metric)
        assert "$circuit" in expr or title in OVERVIEW, title


# The first row: every circuit of the selected targets.
OVERVIEW = {"Currently Open Circuits", "Circuit Trip Rate", "Circuit State Overview"}


def test_rates_use_grafanas_rate_interval_and_ranges_the_dashboards_range():
    windows = {
        key: re.findall(r"\[([^\]]+)\]", target["expr"])
        for key, (_panel, target) in targets().items()
        if "[" in target["expr"]
    }
    for title, found in windows.items():
        instant = targets()[title][1].get("instant", False)
        # A time series gets Grafana's step-aware window; an instant panel sums the range.
        # A ratio of two rates: both over the same window.
        assert set(found) == {"$__range" if instant else "$__rate_interval"}, title
    assert {"Circuit Trip Rate", "Fraction of time open", "Rejection ratio"} <= set(windows)


def test_no_shipped_query_compares_the_state_gauge_with_one():
    """With N workers the gauge reads N (or any count up to N): `== 1` misses them."""
    queries = [
        *exprs().values(),
        *(rule["expr"] for rule in rules(PROMETHEUS / "alerts.yml")),
        *(rule["expr"] for rule in rules(PROMETHEUS / "rules.yml")),
    ]
    assert len(queries) == 20 + 7 + 5
    assert [q for q in queries if re.search(r"==\s*1\b", q)] == []


def test_dashboard_ids_are_unique_and_the_uid_is_stable():
    dashboard = board()
    ids = [p["id"] for p in dashboard["panels"]]
    assert ids == list(range(1, 24))
    assert dashboard["uid"] == "fluxgate-stream"
    assert "id" not in dashboard  # importing creates a new dashboard, keyed by uid


# -- the Prometheus rules and config --------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_checks_the_alerting_and_recording_rules():
    result = promtool("check", "rules", "alerts.yml", "rules.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Checking alerts.yml\n  SUCCESS: 7 rules found\n\n"
        "Checking rules.yml\n  SUCCESS: 5 rules found\n\n"
    )


@pytest.mark.prometheus
@pytest.mark.parametrize("tests", ["alerts_test.yml", "rules_test.yml"])
def test_promtool_unit_tests_of_the_rules_pass(tests):
    result = promtool("test", "rules", tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"Unit Testing:  {tests}\n  SUCCESS\n\n"


def run_changed_unit_tests(tmp_path: Path, rules_file: str, text: str) -> str:
    """Run ``rules_file``'s unit tests on ``text`` in its place; return promtool's output."""
    (tmp_path / rules_file).write_text(text, encoding="utf-8")
    tests = rules_file.replace(".yml", "_test.yml")
    shutil.copy(PROMETHEUS / tests, tmp_path)
    result = promtool("test", "rules", tests, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    return result.stdout + result.stderr


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("change", "alert"),
    [
        (("> 3", "> 4"), "CircuitBreakerFlapping"),
        (
            (
                "for: 5m\n        labels:\n          severity: critical",
                "for: 6m\n        labels:\n          severity: critical",
            ),
            "CircuitBreakerOpen",
        ),
        (('state=~"open|half_open"', 'state="open"'), "CircuitBreakerOpen"),
        (('state=~"disabled|metrics_only"', 'state="disabled"'), "CircuitBreakerProtectionOff"),
        (
            (
                "(rate(circuit_breaker_calls_total[5m])) > 0) > 0.1",
                "(rate(circuit_breaker_calls_total[5m])) > 0) > 0.25",
            ),
            "CircuitBreakerCallsRejected",
        ),
        (
            (
                "(rate(circuit_breaker_calls_total[5m])) >= 0.1",
                "(rate(circuit_breaker_calls_total[5m])) >= 0",
            ),
            "CircuitBreakerCallsRejected",
        ),
        (
            (
                '(rate(circuit_breaker_calls_total{kind=~"successful|failed"}[5m])) >= 0.1',
                "(rate(circuit_breaker_calls_total[5m])) >= 0.1",
            ),
            "CircuitBreakerCallsFailing",
        ),
        (
            (
                'sum without (state) (circuit_breaker_state{state="closed"})',
                'sum without (state) (circuit_breaker_state{state=~"closed|open"})',
            ),
            "CircuitBreakerCallsFailing",
        ),
        (("for: 10m", "for: 11m"), "CircuitBreakerCallsFailing"),
    ],
)
def test_the_rules_unit_tests_catch_a_changed_rule(tmp_path, change, alert):
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    old, new = change
    assert text.count(old) == 1
    output = run_changed_unit_tests(tmp_path, "alerts.yml", text.replace(old, new))
    assert f"alertname: {alert}" in output


#: The alerts' expressions as shipped before they counted processes: right for one process only.
SINGLE_PROCESS_EXPRESSIONS = {
    "CircuitBreakerOpen": (
        'max without (state) (circuit_breaker_state{state=~"open|half_open"}) == 1'
    ),
    "CircuitBreakerForcedOpen": (
        'max without (state) (circuit_breaker_state{state="forced_open"}) == 1'
    ),
    "CircuitBreakerFlapping": (
        "sum without (old_state, new_state) ("
        'increase(circuit_breaker_state_transition_total{new_state="open"}[15m])) > 3'
    ),
    "CircuitBreakerHalfOpenStuck": (
        'max without (state) (circuit_breaker_state{state="half_open"}) == 1'
    ),
    "CircuitBreakerProtectionOff": (
        'max without (state) (circuit_breaker_state{state=~"disabled|metrics_only"}) == 1'
    ),
    "CircuitBreakerCallsFailing": (
        'sum without (kind) (rate(circuit_breaker_calls_total{kind="failed"}[5m]))'
        ' / sum without (kind) (rate(circuit_breaker_calls_total{kind=~"successful|failed"}[5m]))'
        " > 0.1"
        ' and sum without (kind) (rate(circuit_breaker_calls_total{kind=~"successful|failed"}[5m]))'
        " >= 0.1"
        ' and max without (state) (circuit_breaker_state{state="closed"}) == 1'
    ),
}


@pytest.mark.prometheus
@pytest.mark.parametrize("alert", sorted(SINGLE_PROCESS_EXPRESSIONS))
def test_the_unit_tests_fail_each_alert_that_compares_the_gauge_with_one(tmp_path, alert):
    """The multi-worker and fleet cases catch the single-process expression of every alert."""
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    (rule,) = [r for g in document["groups"] for r in g["rules"] if r.get("alert") == alert]
    rule["expr"] = SINGLE_PROCESS_EXPRESSIONS[alert]
    output = run_changed_unit_tests(tmp_path, "alerts.yml", yaml.safe_dump(document))
    assert {line.split(",")[0] for line in re.findall(r"alertname: (\w+,)", output)} == {alert}


@pytest.mark.prometheus
@pytest.mark.parametrize(
    "change",
    [
        ("+ 5", "+ 3"),  # open ranked as half_open
        # a circuit with no live process: 0 / 0 recorded as NaN
        (
            "(sum without (state) (circuit_breaker_state) > 0)",
            "(sum without (state) (circuit_breaker_state))",
        ),
        ('{kind=~"successful|failed"}[5m])) > 0)', "[5m])) > 0)"),  # ignored ones counted
        ("rate(circuit_breaker_calls_total[5m])) > 0)", "rate(circuit_breaker_calls_total[5m])))"),
    ],
)
def test_the_recording_rules_unit_tests_catch_a_changed_rule(tmp_path, change):
    text = (PROMETHEUS / "rules.yml").read_text(encoding="utf-8")
    old, new = change
    assert text.count(old) == 1
    output = run_changed_unit_tests(tmp_path, "rules.yml", text.replace(old, new))
    assert "FAILED" in output


@pytest.mark.prometheus
def test_promtool_checks_the_sample_config_and_the_rules_it_loads():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "Checking prometheus.yml\n"
        "  SUCCESS: 2 rule files found\n"
        " SUCCESS: prometheus.yml is valid prometheus config file syntax\n"
        "\n"
        "Checking alerts.yml\n"
        "  SUCCESS: 7 rules found\n"
        "\n"
        "Checking rules.yml\n"
        "  SUCCESS: 5 rules found\n"
        "\n"
    )


def test_the_call_alerts_spell_out_the_call_recording_rules():
    """The alerts read the raw counters (alerts.yml works alone), with the very expressions that
    rules.yml records: the two cannot drift apart."""
    recorded = {rule["record"]: rule["expr"] for rule in rules(PROMETHEUS / "rules.yml")}
    rate = recorded["instance_circuit_name:circuit_breaker_calls:rate5m"]
    rejected = recorded["instance_circuit_name:circuit_breaker_calls_not_permitted:ratio_rate5m"]
    failed = recorded["instance_circuit_name:circuit_breaker_calls_failed:ratio_rate5m"]
    by_name = alerts()
    assert by_name["CircuitBreakerCallsRejected"]["expr"] == (f"{rejected} > 0.1 and {rate} >= 0.1")
    ran = 'sum without (kind) (rate(circuit_breaker_calls_total{kind=~"successful|failed"}[5m]))'
    assert ran in failed
    assert by_name["CircuitBreakerCallsFailing"]["expr"] == (
        f"{failed} > 0.1 and {ran} >= 0.1 "
        'and sum without (state) (circuit_breaker_state{state="closed"}) '
        "/ sum without (state) (circuit_breaker_state) > 0"
    )


# -- the runbook ----------------------------------------------------------------------------------


def runbook_anchors() -> set[str]:
    """The anchors of docs/runbook.md's headings, as mkdocs (its toc extension) and GitHub make
    them; the runbook's headings are plain words, for which both agree."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.M)
    mkdocs = {slugify(heading, "-") for heading in headings}
    github = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    assert mkdocs == github
    return mkdocs


def test_every_alert_has_a_runbook_url_to_its_own_section_of_the_runbook():
    anchors = runbook_anchors()
    page = f"{SOURCE_URL}/blob/main/docs/runbook.md#"
    for name, rule in alerts().items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(page), (name, url)
        anchor = url.removeprefix(page)
        assert anchor in anchors, (name, anchor)
        assert anchor == slugify(name, "-"), name  # the section is titled with the alert's name
    assert set(alerts()) <= set(
        re.findall(r"^## (\w+)$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    )


def test_the_runbook_is_in_the_sites_navigation():
    assert "  - Runbook: runbook.md\n" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_every_alert_has_a_summary_a_description_and_a_severity():
    for name, rule in alerts().items():
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name


# -- the dashboard's queries on workers and fleets -----------------------------------------------

# One minute a sample, 11 samples (0m to 10m); the queries are evaluated at 10m, as a range
# query's last point or an instant query. Two jobs, four instances: checkout-1 runs 3 workers
# (multiprocess mode: the gauge counts them), checkout-2 and ledger-2 one process each, ledger-1
# 2 workers. The same circuit name in two jobs is two circuits.
C1, C2, L1, L2 = "checkout-1:8000", "checkout-2:8000", "ledger-1:8000", "ledger-2:8000"
STATES_AT = {
    # (instance, circuit): {state: processes}
    (C1, "payment_api"): {"open": 3, "closed": 0, "half_open": 0},
    (C1, "search_api"): {"open": 1, "closed": 2, "half_open": 0},
    (C1, "pricing_api"): {"open": 0, "closed": 3, "half_open": 0},
    (C2, "payment_api"): {"open": 0, "closed": 1, "half_open": 0},
    (C2, "search_api"): {"open": 0, "closed": 0, "half_open": 1},
    (C2, "pricing_api"): {"open": 0, "closed": 0, "half_open": 1},
    (L1, "payment_api"): {"forced_open": 1, "closed": 1},
    (L2, "payment_api"): {"forced_open": 0, "closed": 1},
}
OTHER_SERIES = [
    # trips: checkout-1's 3 workers 3 a minute in all, checkout-2 1 a minute
    (
        f'circuit_breaker_state_transition_total{{instance="{C1}", circuit_name="payment_api", '
        'old_state="closed", new_state="open"}',
        "0+3x10",
    ),
    (
        f'circuit_breaker_state_transition_total{{instance="{C1}", circuit_name="search_api", '
        'old_state="closed", new_state="open"}',
        "0+1x10",
    ),
    (
        f'circuit_breaker_state_transition_total{{instance="{C2}", circuit_name="payment_api", '
        'old_state="closed", new_state="open"}',
        "0+1x10",
    ),
    # health and time in state: single-process features (checkout-2, ledger-2)
    (
        f'circuit_breaker_failure_rate_ratio{{instance="{C2}", circuit_name="payment_api"}}',
        "0.25x10",
    ),
    (
        f'circuit_breaker_failure_rate_ratio{{instance="{L2}", circuit_name="payment_api"}}',
        "0.5x10",
    ),
    (
        f'circuit_breaker_slow_call_rate_ratio{{instance="{C2}", circuit_name="payment_api", '
        'threshold_seconds="0.1"}',
        "0.5x10",
    ),
    (
        f'circuit_breaker_average_latency_seconds{{instance="{C2}", circuit_name="payment_api"}}',
        "0.2x10",
    ),
    (
        f'circuit_breaker_last_transition_timestamp_seconds{{instance="{C2}", '
        'circuit_name="payment_api"}',
        "500x10",
    ),
    (
        f'circuit_breaker_last_transition_timestamp_seconds{{instance="{L2}", '
        'circuit_name="payment_api"}',
        "550x10",
    ),
    (
        f'circuit_breaker_state_seconds_total{{instance="{C2}", circuit_name="payment_api", '
        'state="closed"}',
        "0+60x10",
    ),
    (
        f'circuit_breaker_state_seconds_total{{instance="{C2}", circuit_name="payment_api", '
        'state="open"}',
        "0x10",
    ),
    (
        f'circuit_breaker_state_seconds_total{{instance="{L2}", circuit_name="payment_api", '
        'state="open"}',
        "0+60x10",
    ),
]


def _call_series(instance: str, per_minute: dict[str, int], buckets: dict[str, dict[str, int]]):
    """One circuit's (payment_api's) call counters and duration buckets on one instance: calls a
    minute by kind, and by kind, calls a minute at or under each bucket bound."""
    circuit = f'instance="{instance}", circuit_name="payment_api"'
    series = [
        (f'circuit_breaker_calls_total{{{circuit}, kind="{kind}"}}', f"0+{n}x10")
        for kind, n in per_minute.items()
    ]
    series.extend(
        (
            f'circuit_breaker_call_duration_seconds_bucket{{{circuit}, kind="{kind}", le="{le}"}}',
            f"0+{n}x10",
        )
        for kind, bounds in buckets.items()
        for le, n in bounds.items()
    )
    return series


KINDS = dict.fromkeys(("successful", "failed", "ignored", "not_permitted", "cancelled"), 0)
# Calls (meter_calls): counters and a histogram, which multiprocess mode sums over an instance's
# workers (checkout-1's 3 workers export one series per kind). checkout's payment_api, over its
# two instances: 30 + 15 successful, 15 + 0 failed, 60 + 0 refused calls a minute; of the 60
# that ran, 30 took over 0.1 s (15 of checkout-1's successes, all its failures), none over 1 s.
# Counts a minute are multiples of 15, so that every rate and ratio is an exact float: promtool
# compares them exactly.
OTHER_SERIES += [
    *_call_series(
        C1,
        {**KINDS, "successful": 30, "failed": 15, "not_permitted": 60},
        {
            "successful": {"0.1": 15, "1.0": 30, "+Inf": 30},
            "failed": {"0.1": 0, "1.0": 15, "+Inf": 15},
        },
    ),
    *_call_series(
        C2,
        {**KINDS, "successful": 15},
        {"successful": {"0.1": 15, "1.0": 15, "+Inf": 15}},
    ),
    # ledger's payment_api: 60 successful calls a minute, all under 0.1 s
    *_call_series(L2, {**KINDS, "successful": 60}, {"successful": {"0.1": 60, "+Inf": 60}}),
    # trips: checkout-1 one a minute by failure rate; checkout-2 none; ledger-2 one, at 5m, for
    # which the failure rate and the slow-call rate held
    (
        f'circuit_breaker_trips_total{{instance="{C1}", circuit_name="payment_api", '
        'reason="failure_rate"}',
        "0+1x10",
    ),
    (
        f'circuit_breaker_trips_total{{instance="{C2}", circuit_name="payment_api", '
        'reason="failure_rate"}',
        "0x10",
    ),
    (
        f'circuit_breaker_trips_total{{instance="{L2}", circuit_name="payment_api", '
        'reason="failure_rate+slow_rate"}',
        "0x5 1x5",
    ),
    # shadow trips (metrics_only): none on checkout; ledger's payment_api once on ledger-1's 2
    # workers (at 6m), twice on ledger-2 (at 3m and 8m)
    *(
        (
            f'circuit_breaker_shadow_trips_total{{instance="{instance}", '
            'circuit_name="payment_api"}',
            values,
        )
        for instance, values in ((C1, "0x10"), (C2, "0x10"), (L1, "0x5 1x5"), (L2, "0x2 1x4 2x4"))
    ),
]


def _quantile(q: float, bounds: list[tuple[float, float]]) -> float:
    """histogram_quantile of cumulative (bound, count) buckets, the first from 0."""
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            return lower + (bound - lower) * ((rank - below) / (count - below))  # as Prometheus
        lower, below = bound, count
    raise AssertionError(bounds)


# Per second: checkout's payment_api, both instances: 0.5 calls at or under 0.1 s, 1 under 1 s.
CP_BUCKETS = [(0.1, 0.5), (1.0, 1.0), (float("inf"), 1.0)]
LP_BUCKETS = [(0.1, 1.0), (float("inf"), 1.0)]

CP, CS, CR, LP = (
    'job="checkout", circuit_name="payment_api"',
    'job="checkout", circuit_name="search_api"',
    'job="checkout", circuit_name="pricing_api"',
    'job="ledger", circuit_name="payment_api"',
)
#: What each panel shows at 10m with every job, instance and circuit selected: {labels: value}.
EXPECTED_ALL = {
    "Currently Open Circuits": {"{}": 2},  # checkout's payment_api and search_api: not 4
    "Circuit Trip Rate": {f"{{{CP}}}": 4 / 60, f"{{{CS}}}": 1 / 60},
    "Circuit State Overview": {  # breakers: one per circuit per process
        '{state="open"}': 4,
        '{state="closed"}': 8,
        '{state="half_open"}': 2,
        '{state="forced_open"}': 1,
    },
    # 5 open, 4 forced_open, 3 half_open, 0 closed: the most severe state of any process
    "Circuit state timeline": {f"{{{CP}}}": 5, f"{{{CS}}}": 5, f"{{{CR}}}": 3, f"{{{LP}}}": 4},
    "Share of processes in each state": {  # each instance's share, averaged over instances
        f'{{{CP}, state="open"}}': 0.5,
        f'{{{CP}, state="closed"}}': 0.5,
        f'{{{CS}, state="open"}}': 1 / 6,
        f'{{{CS}, state="closed"}}': 1 / 3,
        f'{{{CS}, state="half_open"}}': 0.5,
        f'{{{CR}, state="closed"}}': 0.5,
        f'{{{CR}, state="half_open"}}': 0.5,
        f'{{{LP}, state="forced_open"}}': 0.25,
        f'{{{LP}, state="closed"}}': 0.75,
    },
    "State transitions in the time range": {
        f'{{{CP}, old_state="closed", new_state="open"}}': 40,
        f'{{{CS}, old_state="closed", new_state="open"}}': 10,
    },
    "Failure rate (window)": {f"{{{CP}}}": 0.25, f"{{{LP}}}": 0.5},
    "Slow-call rate (window)": {f'{{{CP}, threshold_seconds="0.1"}}': 0.5},
    "Average call latency (window)": {f"{{{CP}}}": 0.2},
    "Time since the last transition": {f"{{{CP}}}": 100, f"{{{LP}}}": 50},
    "Fraction of time open": {f"{{{CP}}}": 0, f"{{{LP}}}": 1},
    "Time in each state over the time range": {
        f'{{{CP}, state="closed"}}': 600,
        f'{{{LP}, state="open"}}': 600,
    },
    "Calls per second by kind": {
        **{f'{{{CP}, kind="{kind}"}}': 0.0 for kind in KINDS},
        f'{{{CP}, kind="successful"}}': 0.75,
        f'{{{CP}, kind="failed"}}': 0.25,
        f'{{{CP}, kind="not_permitted"}}': 1.0,
        **{f'{{{LP}, kind="{kind}"}}': 0.0 for kind in KINDS},
        f'{{{LP}, kind="successful"}}': 1.0,
    },
    "Rejection ratio": {f"{{{CP}}}": 0.5, f"{{{LP}}}": 0},  # 60 of 120
    "Failure ratio": {f"{{{CP}}}": 0.25, f"{{{LP}}}": 0},  # 15 of 60
    **{
        f"Call latency (p50, p95, p99) [{ref_id}]": {
            f"{{{CP}}}": _quantile(q, CP_BUCKETS),
            f"{{{LP}}}": _quantile(q, LP_BUCKETS),
        }
        for ref_id, q in (("A", 0.5), ("B", 0.95), ("C", 0.99))
    },
    "Trips by reason over the time range": {
        f'{{{CP}, reason="failure_rate"}}': 10,
        f'{{{LP}, reason="failure_rate+slow_rate"}}': 1,
    },
    "Shadow trips over the time range": {f"{{{LP}}}": 3},  # summed over ledger's instances
}
#: The same with one job and one instance picked (checkout-2, a single process).
EXPECTED_ONE_INSTANCE = {
    "Currently Open Circuits": {},  # nothing open there
    "Circuit Trip Rate": {f"{{{CP}}}": 1 / 60},
    "Circuit State Overview": {
        '{state="open"}': 0,
        '{state="closed"}': 1,
        '{state="half_open"}': 2,
    },
    "Circuit state timeline": {f"{{{CP}}}": 0, f"{{{CS}}}": 3, f"{{{CR}}}": 3},
    "Share of processes in each state": {
        f'{{{CP}, state="closed"}}': 1,
        f'{{{CS}, state="half_open"}}': 1,
        f'{{{CR}, state="half_open"}}': 1,
    },
    "Rejection ratio": {f"{{{CP}}}": 0},
    "Failure ratio": {f"{{{CP}}}": 0},
    "Call latency (p50, p95, p99) [B]": {f"{{{CP}}}": 0.1 * 0.95},  # all 15 under 0.1 s
    "Trips by reason over the time range": {},  # none on checkout-2
    "Shadow trips over the time range": {},  # likewise
}


def input_series() -> list[dict[str, str]]:
    series = [
        {
            "series": f'circuit_breaker_state{{job="{job_of(instance)}", instance="{instance}", '
            f'circuit_name="{circuit}", state="{state}"}}',
            "values": f"{count}x10",
        }
        for (instance, circuit), states in STATES_AT.items()
        for state, count in states.items()
    ]
    for selector, values in OTHER_SERIES:
        instance = re.search(r'instance="([^"]+)"', selector)[1]
        labelled = selector.replace("{", f'{{job="{job_of(instance)}", ', 1)
        series.append({"series": labelled, "values": values})
    return series


def job_of(instance: str) -> str:
    return instance.split("-", maxsplit=1)[0]


def dashboard_unit_tests(
    variables: dict[str, str], expected: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """A promtool unit-test file running the panels' queries, variables substituted."""
    substitute = {"$__rate_interval": "5m", "$__range": "10m", **variables}
    tests = []
    for title, samples in expected.items():
        expr = exprs()[title]
        for name, value in substitute.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, expr
        tests.append(
            {
                "expr": expr,
                "eval_time": "10m",
                "exp_samples": [
                    {"labels": labels, "value": value} for labels, value in samples.items()
                ],
            }
        )
    return {
        "rule_files": [str(PROMETHEUS / "rules.yml")],  # the recorded series the panels read
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series(), "promql_expr_test": tests}],
    }


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        pytest.param({"$job": ".*", "$instance": ".*", "$circuit": ".*"}, EXPECTED_ALL, id="all"),
        pytest.param(
            {"$job": "checkout", "$instance": "checkout-2:8000", "$circuit": ".*"},
            EXPECTED_ONE_INSTANCE,
            id="one-instance",
        ),
    ],
)
def test_every_dashboard_query_shows_workers_and_fleets_right(tmp_path, variables, expected):
    if expected is EXPECTED_ALL:
        assert set(expected) == set(exprs())  # every panel
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(dashboard_unit_tests(variables, expected)), encoding="utf-8")
    result = promtool("test", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the Kubernetes PrometheusRule ----------------------------------------------------------------


def test_the_prometheusrule_holds_exactly_the_rules_files_groups():
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == "fluxgate-stream"
    groups = [
        group
        for source in ("alerts.yml", "rules.yml")
        for group in yaml.safe_load((PROMETHEUS / source).read_text(encoding="utf-8"))["groups"]
    ]
    assert manifest["spec"] == {"groups": groups}
    assert sum(len(group["rules"]) for group in groups) == 12


def test_committed_prometheusrule_is_what_the_generator_writes():
    generator = load_kubernetes_generator()
    assert MANIFEST.read_text(encoding="utf-8") == generator.render(), (
        "deploy/kubernetes/prometheusrule.yaml is out of date: run make kubernetes"
    )


@pytest.mark.prometheus
def test_promtool_checks_the_prometheusrules_groups(tmp_path):
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    (tmp_path / "spec.yml").write_text(yaml.safe_dump(manifest["spec"]), encoding="utf-8")
    result = promtool("check", "rules", "spec.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Checking spec.yml\n  SUCCESS: 12 rules found\n\n"
