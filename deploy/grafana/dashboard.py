"""Generate the Grafana dashboard for fluxgate-stream: ``deploy/grafana/fluxgate-stream.json``.

Built with Grafana's ``grafana-foundation-sdk`` (installed by the project's ``test`` extra)::

    python deploy/grafana/dashboard.py          # rewrite fluxgate-stream.json
    python deploy/grafana/dashboard.py --check  # exit 1 if the committed JSON is out of date

Every query reads only the targets picked in the ``job`` and ``instance`` variables, and is right
for one process, N workers (prometheus_client's multiprocess mode, where the state gauge counts
the live workers in each state) and a fleet (several instances): no query compares the state
gauge with 1. A circuit is identified by its ``job`` and ``circuit_name``; its instances and
their workers are aggregated deliberately (see each query). Rates use Grafana's
``$__rate_interval``, ranges the dashboard's ``$__range``.

The first row is the three panels of fluxgate's Prometheus page, over every circuit of the
selected targets: open circuits, trip rate, breakers per state. The second row follows the
circuits picked in the ``circuit`` variable: a state timeline (the most severe state any of a
circuit's processes is in), the share of processes in each state, and a table of the transitions
in the dashboard's time range. The third row shows the same circuits' health, read from their
breakers' windows at scrape time (``fluxgate_stream.health.watch``): failure rate, slow-call
rate, average latency, and the time since each last changed state. The fourth row shows where
the same circuits spent their time (``PrometheusListener(..., time_in_state=True)``): the
fraction of time open, which catches OPEN episodes shorter than the scrape interval, and the
seconds in each state over the range. Health and time in state are single-process features
(custom collectors, which multiprocess mode never reads): across instances their panels show
the worst instance, or the sum.

The timeline and the share panel read the recording rules of ``deploy/prometheus/rules.yml``,
which Prometheus must load (``instance_circuit_name:circuit_breaker_state_severity:max`` and
``instance_circuit_name_state:circuit_breaker_state:ratio``); the rates do not, since a recorded
rate has a fixed window where Grafana picks one per step.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    piechart,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.piechart import PieChartLabels, PieChartType
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from fluxgate_stream import ALL_STATES
from fluxgate_stream import _catalogue as catalogue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # deploy/, for generated.py
import generated  # found on the path set above: deploy/ is no package

OUTPUT = Path(__file__).with_name("fluxgate-stream.json")

UID = "fluxgate-stream"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The targets picked in the job and instance variables; the circuits picked in circuit.
TARGETS = 'job=~"$job", instance=~"$instance"'
CIRCUITS = f'{TARGETS}, circuit_name=~"$circuit"'

# Every metric name comes from the library's catalogue, spelled there once.
STATE = catalogue.STATE.sample
TRANSITIONS_TOTAL = catalogue.TRANSITIONS.sample
STATE_SECONDS_TOTAL = catalogue.STATE_SECONDS.sample
CALLS_TOTAL = catalogue.CALLS.sample
CALL_DURATION_BUCKET = f"{catalogue.CALL_DURATION.sample}_bucket"
TRIPS_TOTAL = catalogue.TRIPS.sample
SHADOW_TRIPS_TOTAL = catalogue.SHADOW_TRIPS.sample

# The recording rules of deploy/prometheus/rules.yml that the dashboard reads.
SEVERITY_RULE = "instance_circuit_name:circuit_breaker_state_severity:max"
SHARE_RULE = "instance_circuit_name_state:circuit_breaker_state:ratio"

# The panels of fluxgate's Prometheus page, for one process, N workers and a fleet. Open
# circuits: circuits (job, circuit_name) open in at least one process of the selected targets.
OPEN_CIRCUITS = f'count(sum by (job, circuit_name) ({STATE}{{state="open", {TARGETS}}}) > 0)'
# Trips per second, summed over the circuit's processes (workers' counters are already summed).
TRIP_RATE = (
    f'sum by (job, circuit_name) (rate({TRANSITIONS_TOTAL}{{new_state="open", {TARGETS}}}'
    "[$__rate_interval]))"
)
# Breakers per state: one breaker per circuit per process, so 3 workers open count 3.
STATE_OVERVIEW = f"sum by (state) ({STATE}{{{TARGETS}}})"

#: One colour per fluxgate state, in ``ALL_STATES`` order (closed, open, half_open, metrics_only,
#: disabled, forced_open).
STATE_COLOURS = ("green", "red", "yellow", "blue", "text", "purple")

#: The most severe state first: when the processes of one circuit disagree, the timeline shows
#: this one. The severity recording rule ranks them the other way round: closed 0 ... open 5.
SEVERITY = ("open", "forced_open", "half_open", "disabled", "metrics_only", "closed")


def severity_rank(state: str) -> int:
    """The rank ``SEVERITY_RULE`` records for ``state``: 0 for closed up to 5 for open."""
    return len(SEVERITY) - 1 - SEVERITY.index(state)


# One series per circuit: the most severe state any of its selected processes is in, as a rank.
STATE_RANK = f"max by (job, circuit_name) ({SEVERITY_RULE}{{{CIRCUITS}}})"
# Per circuit and state, the share of its processes in that state, averaged over the selected
# instances (each instance weighs the same, as behind a load balancer); states at 0 are left out.
STATE_SHARE = f"avg by (job, circuit_name, state) ({SHARE_RULE}{{{CIRCUITS}}}) > 0"

TRANSITIONS = (
    "round(sum by (job, circuit_name, old_state, new_state) ("
    f"increase({TRANSITIONS_TOTAL}{{{CIRCUITS}}}[$__range])"
    ")) > 0"
)


# Breaker health (fluxgate_stream.health): the worst instance of each selected circuit. A circuit
# whose window is empty exports no ratio and no average, so its line has a gap there.
FAILURE_RATE = f"max by (job, circuit_name) ({catalogue.FAILURE_RATE.name}{{{CIRCUITS}}})"
SLOW_CALL_RATE = (
    f"max by (job, circuit_name, threshold_seconds) ({catalogue.SLOW_CALL_RATE.name}{{{CIRCUITS}}})"
)
AVERAGE_LATENCY = f"max by (job, circuit_name) ({catalogue.AVERAGE_LATENCY.name}{{{CIRCUITS}}})"
# The most recent transition among a circuit's instances.
SINCE_TRANSITION = (
    f"time() - max by (job, circuit_name) ({catalogue.LAST_TRANSITION.name}{{{CIRCUITS}}})"
)


# Time in state (PrometheusListener(..., time_in_state=True)): the worst instance's fraction of
# the time spent open, and every state's seconds in the dashboard's range, summed over instances.
TIME_OPEN = (
    f'max by (job, circuit_name) (rate({STATE_SECONDS_TOTAL}{{state="open", {CIRCUITS}}}'
    "[$__rate_interval]))"
)
TIME_IN_STATE = (
    f"sum by (job, circuit_name, state) "
    f"(increase({STATE_SECONDS_TOTAL}{{{CIRCUITS}}}[$__range])) > 0"
)


# Calls (meter_calls): counters and a histogram, summed over each circuit's processes (the
# multiprocess collector already sums an instance's workers) and instances.
def _calls_rate(kinds: str | None = None) -> str:
    """Calls per second of each selected circuit, of the ``kinds`` (a regex) or of all."""
    match = "=~" if kinds is not None and "|" in kinds else "="
    selector = CIRCUITS if kinds is None else f'kind{match}"{kinds}", {CIRCUITS}'
    return f"sum by (job, circuit_name) (rate({CALLS_TOTAL}{{{selector}}}[$__rate_interval]))"


CALLS_BY_KIND = (
    f"sum by (job, circuit_name, kind) (rate({CALLS_TOTAL}{{{CIRCUITS}}}[$__rate_interval]))"
)
# Rejected / all calls; failed / the calls that ran to a tracked outcome. A circuit with no
# calls in the window has no ratio (the `> 0` keeps 0 / 0 out), not a NaN.
REJECTION_RATIO = f"{_calls_rate('not_permitted')} / ({_calls_rate()} > 0)"
FAILURE_RATIO = f"{_calls_rate('failed')} / ({_calls_rate('successful|failed')} > 0)"
#: The latency quantiles the latency panel draws, one query each.
QUANTILES = (0.5, 0.95, 0.99)


def latency_quantile(quantile: float) -> str:
    """The ``quantile`` of the duration of the selected circuits' calls that ran.

    Every kind the histogram records: successful, failed, ignored.
    """
    return (
        f"histogram_quantile({quantile}, sum by (job, circuit_name, le) "
        f"(rate({CALL_DURATION_BUCKET}{{{CIRCUITS}}}[$__rate_interval])))"
    )


# Trips in the dashboard's range by the tripper conditions that held; round(): increase()
# extrapolates, and a trip is a whole number.
TRIPS_BY_REASON = (
    "round(sum by (job, circuit_name, reason) ("
    f"increase({TRIPS_TOTAL}{{{CIRCUITS}}}[$__range])"
    ")) > 0"
)
# The same for the shadow trips: in metrics_only, the times the tripper would have opened the
# circuit (once per crossing of its threshold), which no transition shows.
SHADOW_TRIPS = (
    "round(sum by (job, circuit_name) ("
    f"increase({SHADOW_TRIPS_TOTAL}{{{CIRCUITS}}}[$__range])"
    ")) > 0"
)

#: The legend of a per-circuit series: a circuit is its job's.
CIRCUIT_LEGEND = "{{circuit_name}} ({{job}})"


def _query(
    expr: str, *, legend: str | None = None, instant: bool = False, ref_id: str = "A"
) -> Dataquery:
    query = Dataquery().expr(expr).datasource(DATASOURCE).ref_id(ref_id)
    query = query.instant() if instant else query.range()
    if legend is not None:
        query = query.legend_format(legend)
    return query


def _open_circuits() -> stat.Panel:
    return (
        stat.Panel()
        .id(2)
        .title("Currently Open Circuits")
        .description(
            "How many circuits are open right now in at least one process of the selected "
            "targets (a circuit: a job's circuit_name; 3 workers open count once)."
        )
        .datasource(DATASOURCE)
        .with_target(_query(OPEN_CIRCUITS))
        .unit("none")
        .decimals(0)
        .no_value("0")
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    Threshold(value=None, color="green"),  # base: 0 open circuits
                    Threshold(value=1, color="orange"),  # warning
                    Threshold(value=5, color="red"),  # critical
                ]
            )
        )
        .color_scheme(dash.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False)
        )
        .height(8)
        .span(6)
    )


def _trip_rate() -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(3)
        .title("Circuit Trip Rate")
        .description(
            "The per-second rate of circuits tripping open, summed over each circuit's "
            "processes and instances. Useful for spotting trends and identifying problematic "
            "services."
        )
        .datasource(DATASOURCE)
        .with_target(_query(TRIP_RATE, legend=CIRCUIT_LEGEND))
        .unit("suffix: transitions/s")
        .min(0)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(show_legend=True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .height(8)
        .span(12)
    )


def _state_overview() -> piechart.Panel:
    return (
        piechart.Panel()
        .id(4)
        .title("Circuit State Overview")
        .description(
            "How many breakers are in each state right now across the selected targets: one "
            "breaker per circuit per process, so a circuit open in 3 workers counts 3 open."
        )
        .datasource(DATASOURCE)
        .with_target(_query(STATE_OVERVIEW, legend="{{state}}", instant=True))
        .unit("none")
        .pie_type(PieChartType.PIE)
        .display_labels([PieChartLabels.NAME, PieChartLabels.VALUE])
        .reduce_options(common_builders.ReduceDataOptions().values(values=True).calcs([]))
        .height(8)
        .span(6)
    )


def _state_timeline() -> statetimeline.Panel:
    mappings = ValueMap(
        options={
            str(severity_rank(state)): ValueMappingResult(
                text=state, color=colour, index=severity_rank(state)
            )
            for state, colour in zip(ALL_STATES, STATE_COLOURS, strict=True)
        }
    )
    return (
        statetimeline.Panel()
        .id(6)
        .title("Circuit state timeline")
        .description(
            "The state of each selected circuit over time, one row per circuit: the most "
            "severe state any of its processes is in (open in 1 of 3 workers shows open; see "
            "the share panel for how many)."
        )
        .datasource(DATASOURCE)
        .with_target(_query(STATE_RANK, legend=CIRCUIT_LEGEND))
        .mappings([mappings])
        .color_scheme(dash.FieldColor().mode(FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(merge_values=True)
        .row_height(0.9)
        .height(10)
        .span(24)
    )


def _state_share() -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(7)
        .title("Share of processes in each state")
        .description(
            "For each selected circuit, the share of its processes (workers) in each state, "
            "averaged over the selected instances: 1 for a single process' state; open 0.67 "
            "and closed 0.33 for 2 of 3 workers open. States no process is in are left out."
        )
        .datasource(DATASOURCE)
        .with_target(_query(STATE_SHARE, legend=CIRCUIT_LEGEND + ": {{state}}"))
        .unit("percentunit")
        .min(0)
        .max(1)
        .legend(_legend())
        .height(8)
        .span(24)
    )


def _transitions() -> table.Panel:
    return (
        table.Panel()
        .id(8)
        .title("State transitions in the time range")
        .description(
            "How many times each selected circuit moved from one state to another during the "
            "dashboard's time range (summed over its processes and instances), most frequent "
            "first."
        )
        .datasource(DATASOURCE)
        .with_target(
            _query(TRANSITIONS, instant=True).format(PromQueryFormat.TABLE),
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {
                        "job": 0,
                        "circuit_name": 1,
                        "old_state": 2,
                        "new_state": 3,
                        "Value": 4,
                    },
                    "renameByName": {
                        "job": "Job",
                        "circuit_name": "Circuit",
                        "old_state": "From",
                        "new_state": "To",
                        "Value": "Transitions",
                    },
                },
            )
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="sortBy",
                options={"sort": [{"field": "Transitions", "desc": True}]},
            )
        )
        .decimals(0)
        .height(10)
        .span(24)
    )


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(show_legend=True)
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
    )


def _window_panel(
    panel_id: int, title: str, description: str, target: Dataquery, unit: str
) -> timeseries.Panel:
    """A health row time series over the breakers' windows: from 0, one line per series.

    Ratios (unit ``percentunit``) also stop at 1.
    """
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
        .unit(unit)
        .min(0)
    )
    if unit == "percentunit":
        panel = panel.max(1)
    return panel.legend(_legend()).height(8).span(12)


def _failure_rate() -> timeseries.Panel:
    return _window_panel(
        10,
        "Failure rate (window)",
        "Failed calls / calls in each selected circuit's window, as its tripper sees them "
        "(worst instance). The window resets on every transition: no line while it is empty "
        "(just tripped open, or no calls).",
        _query(FAILURE_RATE, legend=CIRCUIT_LEGEND),
        "percentunit",
    )


def _slow_call_rate() -> timeseries.Panel:
    return _window_panel(
        11,
        "Slow-call rate (window)",
        "Calls at least threshold_seconds long / calls in the window, one line per SlowRate "
        "threshold of each selected circuit (worst instance); no line while the window is "
        "empty.",
        _query(SLOW_CALL_RATE, legend=CIRCUIT_LEGEND + " >= {{threshold_seconds}} s"),
        "percentunit",
    )


def _average_latency() -> timeseries.Panel:
    return _window_panel(
        12,
        "Average call latency (window)",
        "Average duration of the calls in each selected circuit's window, failures counting "
        "0 s as in fluxgate's AvgLatency tripper (worst instance); no line while the window "
        "is empty.",
        _query(AVERAGE_LATENCY, legend=CIRCUIT_LEGEND),
        "s",
    )


def _bar_panel(
    panel_id: int, title: str, description: str, target: Dataquery, decimals: int
) -> bargauge.Panel:
    """A horizontal bar gauge of seconds, one bar per series of an instant query."""
    return (
        bargauge.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(target)
        .unit("s")
        .min(0)
        .decimals(decimals)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .orientation(common.VizOrientation.HORIZONTAL)
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(values=False)
        )
        .height(8)
        .span(12)
    )


def _since_transition() -> bargauge.Panel:
    return _bar_panel(
        13,
        "Time since the last transition",
        "How long each selected circuit has been in its current state (its most recently "
        f"changed instance), from {catalogue.LAST_TRANSITION.name}.",
        _query(SINCE_TRANSITION, legend=CIRCUIT_LEGEND, instant=True),
        0,
    )


def _time_open() -> timeseries.Panel:
    return _window_panel(
        15,
        "Fraction of time open",
        "The share of the time each selected circuit spent OPEN (worst instance), "
        f"from {STATE_SECONDS_TOTAL}: exact even for OPEN episodes shorter than "
        "the scrape interval, which the state gauge cannot see.",
        _query(TIME_OPEN, legend=CIRCUIT_LEGEND),
        "percentunit",
    )


def _time_in_state() -> bargauge.Panel:
    return _bar_panel(
        16,
        "Time in each state over the time range",
        "Seconds each selected circuit spent in each state during the dashboard's time range "
        f"(summed over instances), from {STATE_SECONDS_TOTAL}.",
        _query(TIME_IN_STATE, legend=CIRCUIT_LEGEND + ": {{state}}", instant=True),
        1,
    )


def _calls_by_kind() -> timeseries.Panel:
    return _window_panel(
        18,
        "Calls per second by kind",
        "Calls through each selected circuit per second, by how they ended: successful, failed "
        "(the tracker counts it), ignored, not_permitted (rejected) and cancelled; summed over "
        "the circuit's processes and instances.",
        _query(CALLS_BY_KIND, legend=CIRCUIT_LEGEND + ": {{kind}}"),
        "suffix: calls/s",
    )


def _rejection_ratio() -> timeseries.Panel:
    return _window_panel(
        19,
        "Rejection ratio",
        "not_permitted / all calls of each selected circuit: the share of its callers refused "
        "(open, forced open, half-open without a permit). No line while it has no calls.",
        _query(REJECTION_RATIO, legend=CIRCUIT_LEGEND),
        "percentunit",
    )


def _failure_ratio() -> timeseries.Panel:
    return _window_panel(
        20,
        "Failure ratio",
        "failed / (successful + failed) calls of each selected circuit, over every call (not "
        "only the breaker's window, which resets at each transition). No line while no call "
        "ran to an outcome.",
        _query(FAILURE_RATIO, legend=CIRCUIT_LEGEND),
        "percentunit",
    )


def _latency() -> timeseries.Panel:
    panel = _window_panel(
        21,
        "Call latency (p50, p95, p99)",
        "The median, 95th and 99th percentile duration of each selected circuit's calls that "
        "ran (successful, failed, ignored), from circuit_breaker_call_duration_seconds: "
        "interpolated within the histogram's buckets.",
        _query(
            latency_quantile(QUANTILES[0]),
            legend=f"{CIRCUIT_LEGEND} p{QUANTILES[0] * 100:g}",
        ),
        "s",
    )
    for ref_id, quantile in zip("BC", QUANTILES[1:], strict=True):
        panel = panel.with_target(
            _query(
                latency_quantile(quantile),
                legend=f"{CIRCUIT_LEGEND} p{quantile * 100:g}",
                ref_id=ref_id,
            )
        )
    return panel


def _trips_by_reason() -> bargauge.Panel:
    return (
        _bar_panel(
            22,
            "Trips by reason over the time range",
            "How many times each selected circuit tripped open during the dashboard's time "
            "range, by the tripper conditions that held (failure_rate, slow_rate, avg_latency, "
            "failure_streak, other; several joined by +), summed over processes and instances.",
            _query(TRIPS_BY_REASON, legend=CIRCUIT_LEGEND + ": {{reason}}", instant=True),
            0,
        )
        .unit("none")
        .span(24)
    )


def _shadow_trips() -> bargauge.Panel:
    return (
        _bar_panel(
            23,
            "Shadow trips over the time range",
            "How many times each selected circuit's tripper would have opened it while in "
            "metrics_only (which lets every call through) during the dashboard's time range, "
            "once per crossing of its threshold, summed over processes and instances: the "
            "thresholds that shadow mode is validating.",
            _query(SHADOW_TRIPS, legend=CIRCUIT_LEGEND, instant=True),
            0,
        )
        .unit("none")
        .span(24)
    )


#: The query variables, in order: each lists the values of its label among the series the
#: variables before it select (label_values, refreshed with the time range), several may be
#: picked, and "All" matches every value (``.*``, so series that lack the label match too).
VARIABLES = (
    ("job", "Job", "The scrape jobs shown.", f"label_values({STATE}, job)"),
    (
        "instance",
        "Instance",
        "The instances (scrape targets) of the selected jobs shown.",
        f'label_values({STATE}{{job=~"$job"}}, instance)',
    ),
    (
        "circuit",
        "Circuit",
        "The circuits shown in the per-circuit rows.",
        f"label_values({STATE}{{{TARGETS}}}, circuit_name)",
    ),
)


def _query_variable(name: str, label: str, description: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi=True)
        .include_all(include_all=True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def build() -> dash.Dashboard:
    """Return the dashboard's builder."""
    board = (
        dash.Dashboard("fluxgate-stream: circuit breakers")
        .uid(UID)
        .description(
            "State and transitions of fluxgate circuit breakers, as exported by fluxgate-stream "
            "(or fluxgate's own PrometheusListener), their health at scrape time "
            "(fluxgate_stream.health), their time in each state (time_in_state=True) and their "
            "calls (meter_calls)."
        )
        .tags(["fluxgate", "circuit-breaker", "prometheus"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(
            dash.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(VariableOption(selected=True, text="default", value="default"))
        )
    )
    for variable in VARIABLES:
        board = board.with_variable(_query_variable(*variable))
    return (
        board.with_row(dash.Row("Overview: all circuits").id(1))
        .with_panel(_open_circuits())
        .with_panel(_trip_rate())
        .with_panel(_state_overview())
        .with_row(dash.Row("Per circuit: $circuit").id(5))
        .with_panel(_state_timeline())
        .with_panel(_state_share())
        .with_panel(_transitions())
        .with_row(dash.Row("Health at scrape time: $circuit").id(9))
        .with_panel(_failure_rate())
        .with_panel(_slow_call_rate())
        .with_panel(_average_latency())
        .with_panel(_since_transition())
        .with_row(dash.Row("Time in state: $circuit").id(14))
        .with_panel(_time_open())
        .with_panel(_time_in_state())
        .with_row(dash.Row("Calls: $circuit").id(17))
        .with_panel(_calls_by_kind())
        .with_panel(_rejection_ratio())
        .with_panel(_failure_ratio())
        .with_panel(_latency())
        .with_panel(_trips_by_reason())
        .with_panel(_shadow_trips())
    )


def render() -> str:
    """Return the dashboard as the JSON text committed in ``fluxgate-stream.json``."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return encoder.encode(build().build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``fluxgate-stream.json``, or with ``--check`` report whether it is up to date.

    Returns:
        The exit status: 0, or 1 when ``--check`` finds the file missing or out of date.
    """
    return generated.main(
        argv,
        description="Generate the fluxgate-stream Grafana dashboard.",
        output=OUTPUT,
        render=render,
        script=Path(__file__).name,
    )


if __name__ == "__main__":
    sys.exit(main())
