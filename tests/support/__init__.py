"""Shared test helpers: consumers, metric readers, ground truth, HTTP, Prometheus, children."""
