"""``python -m fluxgate_stream demo``: the command line, which lives with the demo."""

import sys

from fluxgate_stream.demo._cli import main

if __name__ == "__main__":  # pragma: no cover  # run by subprocess tests, which coverage skips
    sys.exit(main())
