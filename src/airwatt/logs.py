"""Logging set-up for the CLI: one line per event, time-stamped, to stderr."""

from __future__ import annotations

import logging
import os


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("AIRWATT_LOG_LEVEL", "INFO"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("great_expectations", "urllib3", "matplotlib", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
