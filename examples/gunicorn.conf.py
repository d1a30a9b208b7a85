"""gunicorn hooks that run the fluxgate-stream consumer in each worker process.

    gunicorn -c examples/gunicorn.conf.py --threads 8 --chdir examples 'flask_app:create_app()'

The consumer starts after the fork (``post_fork``), in the worker that serves, before its first
request; it stops when the worker exits (``worker_exit``), applying what is still queued. Works
the same with sync workers (the default) and gthread workers (``--threads``). With more than
one worker, see docs/wsgi.md: prometheus_client's multiprocess mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fluxgate_stream import ConsumerThread

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

consumer: ConsumerThread | None = None


def post_fork(server: Arbiter, worker: Worker) -> None:
    """In each new worker: start the consumer of the default pipeline on a thread of its own."""
    global consumer  # noqa: PLW0603  # one consumer per worker process, as gunicorn's hooks need
    consumer = ConsumerThread().start()
    server.log.info("fluxgate-stream consumer started in worker %s", worker.pid)


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """As the worker exits: stop the consumer, which applies everything still queued."""
    if consumer is not None:
        consumer.stop()
        server.log.info("fluxgate-stream consumer stopped in worker %s", worker.pid)
