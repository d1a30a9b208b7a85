"""Run a script as ``python script.py`` from a terminal does: Ctrl-C raises KeyboardInterrupt.

Run by ``tests/integration/test_examples.py`` as ``as_from_a_terminal.py SCRIPT ARGS...``: a test
runner started in the background may pass SIGINT down ignored, and Python leaves an ignored SIGINT
ignored.
"""

import runpy
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
