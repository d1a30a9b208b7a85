"""``python -m fluxgate_stream.demo``: the demo's command line."""

import sys

from fluxgate_stream.demo._cli import main

if __name__ == "__main__":  # pragma: no cover  # run by subprocess tests, which coverage skips
    sys.exit(main())
