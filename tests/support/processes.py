"""Running this interpreter in a child process: to completion (``run_python``) or alongside.

A child inherits this process's environment as it is (unless a test passes ``env``): under pytest
that includes what only the C-level environment holds, such as the ``COLUMNS`` that readline sets,
which the demo's wrapped output depends on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
#: The scripts tests run in a child interpreter, by path; ruff and pyright read them.
CHILDREN = ROOT / "tests" / "children"


def _command(args: tuple[str | Path, ...], *, warnings_as_errors: bool) -> list[str]:
    return [sys.executable, *(["-W", "error"] if warnings_as_errors else []), *map(str, args)]


def importing_tests(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the repository root first on ``PYTHONPATH``.

    For a script under ``CHILDREN`` that imports the shared helpers as ``tests.support...``.
    """
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    return environment


def run_python(
    *args: str | Path,
    timeout: float = 60,
    warnings_as_errors: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` to completion, within ``timeout`` seconds; return what it printed.

    ``args`` is what follows ``python`` on a command line: a script's path, ``-c`` and code, or
    ``-m`` and a module, then their arguments. With ``warnings_as_errors``, ``-W error`` comes
    before them. ``env`` is the child's whole environment and ``cwd`` its directory (default:
    this process's). Output is captured as text. With ``check``, a non-zero exit fails the test,
    showing the child's stderr.
    """
    result = subprocess.run(  # this interpreter, on our own scripts and modules
        _command(args, warnings_as_errors=warnings_as_errors),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def start_python(  # noqa: PLR0913  # the few Popen options our tests use, passed through
    *args: str | Path,
    warnings_as_errors: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = subprocess.PIPE,
    pass_fds: tuple[int, ...] = (),
    stdout: int | IO[Any] | None = subprocess.PIPE,
    start_new_session: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python *args`` (as for ``run_python``) for a test that talks to it as it runs.

    Its stdout is a text pipe unless ``stdout`` says otherwise; ``stdin`` and ``stderr`` are as
    for ``subprocess.Popen`` (``subprocess.PIPE``, ``subprocess.STDOUT``...). The caller waits for
    it, or kills it (``process_group`` kills a server and every process it started).
    """
    return subprocess.Popen(  # this interpreter, on our own scripts and modules
        _command(args, warnings_as_errors=warnings_as_errors),
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=True,
        pass_fds=pass_fds,
        start_new_session=start_new_session,
    )


@contextmanager
def process_group(
    *args: str | Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> Iterator[subprocess.Popen[str]]:
    """Run ``python *args`` (a server and the workers it starts) while the block runs.

    It leads a session of its own, and its output (stdout and stderr) goes to the file ``log``.
    However the block is left, the whole process group is killed (SIGKILL) and the leader waited
    for, so that no worker outlives a failed test.
    """
    with log.open("w", encoding="utf-8") as output:
        process = start_python(
            *args,
            env=env,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_multiprocess_worker(script: str, directory: Path, *args: str) -> Any:
    """Run ``CHILDREN / script *args`` in multiprocess mode; return the JSON line it printed.

    ``PROMETHEUS_MULTIPROC_DIR`` is ``directory``, set before anything is imported, as under
    gunicorn. The script must print one line of JSON.
    """
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    return json.loads(run_python(CHILDREN / script, *args, env=env).stdout)
