"""fluxgate-stream's benchmark suite: ``python -m bench`` (or ``make bench``).

Every figure is measured in one process run, side by side with upstream fluxgate's own
``fluxgate.listeners.prometheus.PrometheusListener``, on asyncio, trio and (where installed)
uvloop, and written as a Markdown report whose first table says which of issue #12's targets
hold. ``--quick`` runs tiny sizes in seconds (CI's smoke run); ``--only storm trickle`` runs
only the named sections; ``--scale 0.1`` runs a tenth of the full sizes, so a reviewer can
reproduce one figure in seconds.
"""
