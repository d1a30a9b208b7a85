"""The demo's terminal view: one rich table row per circuit, read back from the exported metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from fluxgate_stream.demo._report import CircuitReport, DemoReport

__all__ = ["render_frame"]

_STYLES = {
    "closed": "bold green",
    "open": "bold red",
    "half_open": "bold yellow",
    "forced_open": "bold magenta",
    "metrics_only": "bold cyan",
    "disabled": "dim",
}
_OPERATOR_STATES = ("forced_open", "metrics_only", "disabled")
#: The least console width that shows every column.
WIDE = 120


def _into(circuit: CircuitReport, *states: str) -> int:
    """Exported transitions of ``circuit`` into any of ``states``."""
    return sum(
        n for pair, n in circuit.exported_transitions.items() if pair.split("->")[1] in states
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def render_frame(report: DemoReport, *, width: int = 120) -> Table:
    """Render one frame: every circuit's exported state, transition counts and time open.

    Below ``WIDE`` columns of ``width``, the frame leaves out how each breaker runs, its
    dependency's phase and the call counts.

    Example:
        >>> from fluxgate_stream.demo._report import CircuitReport, DemoReport
        >>> from rich.console import Console
        >>> circuit = CircuitReport(
        ...     "api", "task", "outage", "open", "open", {"closed->open": 1},
        ...     {"closed->open": 1}, {"ok": 5, "failed": 5, "rejected": 2},
        ... )
        >>> report = DemoReport("http://127.0.0.1:8000/metrics", "asyncio", 1.0, 1.0, (circuit,))
        >>> console = Console(width=80, color_system=None)
        >>> with console.capture() as capture:
        ...     console.print(render_frame(report, width=80))
        >>> [line.split() for line in capture.get().splitlines() if "api" in line]
        [['api', 'open', '1', '0', '0', '0', '-']]
    """
    wide = width >= WIDE
    running = (
        f"running {report.elapsed:.1f} s"
        if report.stopped_by is None
        else f"stopped by {report.stopped_by} after {report.elapsed:.1f} s"
    )
    table = Table(
        title=f"fluxgate-stream demo on {report.backend}: {running} (schedule x{report.speed:g})",
        caption=f"state and transitions as exported on {report.url}",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
    )
    table.add_column("circuit", style="bold", no_wrap=True)
    if wide:
        table.add_column("runs", no_wrap=True)
        table.add_column("dependency", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for header in ("opened", "half-open", "closed", "operator", "% open"):
        table.add_column(header, justify="right", no_wrap=True)
    if wide:
        for header in ("ok", "failed", "rejected"):
            table.add_column(header, justify="right", no_wrap=True)
    for circuit in report.circuits:
        state = circuit.exported_state or "?"
        row: list[str | Text] = [circuit.name]
        if wide:
            row += [circuit.runs_on, circuit.phase]
        row.append(Text(state, style=_STYLES.get(state, "bold red reverse")))
        row += [
            str(_into(circuit, "open")),
            str(_into(circuit, "half_open")),
            str(_into(circuit, "closed")),
            str(_into(circuit, *_OPERATOR_STATES)),
            _percent(circuit.open_share),
        ]
        if wide:
            row += [str(circuit.calls[key]) for key in ("ok", "failed", "rejected")]
        table.add_row(*row)
    return table
