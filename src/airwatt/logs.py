"""Logging set-up for the CLI: one line per event, time-stamped, to stderr.

A stage prints what a user needs (the stage, progress, the result, where to look), so the libraries' chatter
is kept out: Lightning's lines are printed once (it installs its own console handler on import, which also
propagated to ours: every line twice), its advert for another logging product is dropped, MLflow says only
warnings (no table-creation notices or artifact download bars), and a dependency's deprecation warning about
its own internals (Lightning calling torch's pytree API) is not shown.
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET = ("great_expectations", "urllib3", "matplotlib", "filelock", "fsspec")
ADVERTS = ("litlogger", "💡 Tip:")  # Lightning's rank-zero "tips" for its paid products
DEPENDENCY_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)  # lightning/_pytree.py vs torch


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(a in message for a in ADVERTS)


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("AIRWATT_LOG_LEVEL", "INFO"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # Lightning's own handler (added when it is imported) prints its lines; they do not reach ours too.
    logging.getLogger("lightning").propagate = False
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropAdverts())
    for pattern in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    # MLflow sets its loggers' levels when it is imported, from this variable.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose else "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
