"""Synchronise a dataset window from the platform's exports, the simulator or a public dataset.

The stage is airwatt.sync.run (``sync``); the exports' layout is in .exports, fetching them over HTTP(S)
in .remote, merging sources into one dataset in .merge, and keeping Label Studio labels across re-syncs in
.carry. Docs: docs/sync-prepare.md.
"""

from airwatt.sync.merge import Window
from airwatt.sync.run import importer_window, requested_window, source_span, sync

__all__ = ["Window", "importer_window", "requested_window", "source_span", "sync"]
