"""Command line: ``python -m fluxgate_stream demo`` (also installed as ``fluxgate-stream``)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import shlex
import sys
from importlib.metadata import PackageNotFoundError, distribution
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["install_hint", "main"]

_log = logging.getLogger("fluxgate_stream")


def _positive(text: str) -> float:
    """Parse a positive, finite number of seconds (or a speed factor).

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a positive finite number.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    """Parse a TCP port, 0 meaning "any free port".

    Raises:
        argparse.ArgumentTypeError: ``text`` is not an integer in 0-65535.
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0-65535, got {text!r}")
    return value


def install_hint(extra: str) -> str:
    """The command that adds ``extra`` to this installation of fluxgate-stream.

    fluxgate-stream is not on PyPI: ``pip install 'fluxgate-stream[demo]'`` would look for it
    there. Installed from a checkout (``make demo`` installs ``-e '.[demo]'`` into ``.venv``) or
    from a wheel file, pip records where it came from (``direct_url.json``, PEP 610): the hint
    reinstalls from there, with this interpreter's pip, so that ``make demo``'s ``.venv`` gets it.

    Example:
        >>> install_hint("trio")  # doctest: +ELLIPSIS
        "... -m pip install ...[trio]'"
    """
    python = shlex.quote(sys.executable)
    try:
        recorded = distribution("fluxgate-stream").read_text("direct_url.json")
        origin: object = json.loads(recorded) if recorded else None
    except (PackageNotFoundError, ValueError):
        origin = None
    if isinstance(origin, dict):
        fields = cast("dict[str, object]", origin)
        url, dir_info = fields.get("url"), fields.get("dir_info")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is not None and parts.scheme == "file":
            where = unquote(parts.path)
            editable = (
                isinstance(dir_info, dict)
                and cast("dict[str, object]", dir_info).get("editable") is True
            )
            flag = "-e " if editable else ""
            return f"{python} -m pip install {flag}{shlex.quote(f'{where}[{extra}]')}"
    return (
        f"{python} -m pip install '.[{extra}]' in a checkout of fluxgate-stream (it is not on PyPI)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxgate-stream",
        description="fluxgate-stream: export fluxgate circuit-breaker state to Prometheus.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the live demo",
        description=(
            "Run real fluxgate breakers (async ones on the event loop, sync ones in worker "
            "threads) in front of simulated dependencies that fail, slow down and recover on a "
            "schedule; serve their metrics over HTTP and show every circuit live. "
            "Ctrl-C stops it cleanly, with every transition exported."
        ),
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to serve metrics on")
    demo.add_argument(
        "--port", type=_port, default=8000, help="port to serve metrics on; 0 picks a free one"
    )
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    demo.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="FACTOR",
        help="play the failure schedule this many times faster (default: 1)",
    )
    demo.add_argument(
        "--json",
        action="store_true",
        help="write the final summary to stdout as one line of JSON (the view goes to stderr)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Exit codes: 0 success; 1 the demo's export did not match its breakers, or the metrics
    server could not start; 2 bad arguments or a missing optional dependency; 130 interrupted
    before the demo could stop cleanly.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from fluxgate_stream.demo._app import (  # noqa: PLC0415  # needs rich, the "demo" extra
            DemoConfig,
            make_console,
            run_demo,
        )
    except ModuleNotFoundError as error:
        print(  # noqa: T201  # a command-line error message
            f"fluxgate-stream demo needs {error.name!r}: {install_hint('demo')}",
            file=sys.stderr,
        )
        return 2
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print(  # noqa: T201  # a command-line error message
            f"--backend trio needs trio: {install_hint('trio')}", file=sys.stderr
        )
        return 2
    config = DemoConfig(
        host=args.host,
        port=args.port,
        backend=args.backend,
        duration=args.duration,
        speed=args.speed,
    )
    console = make_console(stderr=args.json)
    try:
        return run_demo(config, console=console, json_out=sys.stdout if args.json else None)
    except OSError as error:
        _log.error(
            "cannot serve metrics on %s:%s: %s", args.host, args.port, error
        )  # no traceback: the message says it all
        return 1
    except KeyboardInterrupt:
        _log.warning("interrupted before the demo could stop cleanly")
        return 130
