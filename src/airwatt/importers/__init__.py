"""Import public NILM datasets (REDD, REFIT, UK-DALE) into the AirWatt format.

``import_dataset`` (airwatt.importers.run) converts one; each dataset's reader is its own module (.redd,
.refit, .ukdale) over the shared house finding and grid building of ._common and the resampling policy of
.resample. Docs: docs/importers.md.
"""

from airwatt.importers.run import DEFAULT_MAX_FILL_S, KINDS, import_dataset

__all__ = ["DEFAULT_MAX_FILL_S", "KINDS", "import_dataset"]
