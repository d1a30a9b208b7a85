"""The live demo: an application built on fluxgate-stream, not part of the library.

Run it with ``make demo``, ``fluxgate-stream demo`` or ``python -m fluxgate_stream demo`` (the
``demo`` extra installs what it needs: rich). Its modules are private: the library never imports
them, and nothing here is API.

* ``_cli``: the command line and its exit codes.
* ``_app``: the circuits, their simulated dependencies, and the run.
* ``_report``: what the demo reads back from its registry, frame by frame.
* ``_view``: the rich table a frame is shown as.
"""
