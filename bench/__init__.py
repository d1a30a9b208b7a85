"""fluxgate-stream's benchmark suite: ``python -m bench`` (or ``make bench``).

Every figure is measured in one process run, side by side with upstream fluxgate's own
``fluxgate.listeners.prometheus.PrometheusListener``, on asyncio, trio and (where installed)
uvloop, and written as a Markdown report. ``--quick`` runs tiny sizes in seconds (CI's smoke run).
"""
