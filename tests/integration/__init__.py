"""Against the outside world: real Prometheus, deploy files, processes, ASGI, examples, demo."""
