"""Great Expectations plumbing: an ephemeral context, one checkpoint per frame, Data Docs on local disk.

GX 1.x passes the same ``batch_parameters`` to every validation definition of a checkpoint, and each frame
is a different DataFrame, so each suite gets its own checkpoint (all share one context and one Data Docs
site, whose index lists every suite).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from airwatt.validation.suites import SuiteSpec

log = logging.getLogger(__name__)

DOCS_SITE = "airwatt_local"


def import_gx() -> Any:
    """great_expectations, imported with its usage analytics off (the variable is read at import)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    # GX pins this module's logger to INFO at import ("Created temporary directory ... for ephemeral docs
    # site" on every run); let it inherit the level set for "great_expectations" (WARNING in the CLI).
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)
    return gx


def _context(gx: Any, docs_dir: Path | None) -> Any:
    """An in-memory context, progress bars off, with only our Data Docs site (or none)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site)  # the default site points at a temporary directory
    if docs_dir is not None:
        context.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def run_suites(
    suites: list[SuiteSpec],
    frames: dict[str, pd.DataFrame],
    *,
    docs_dir: Path | None,
    example_rows: int,
) -> dict[str, Any]:
    """Run each suite on its frame through a checkpoint; returns suite name -> GX suite validation result.

    ``result_format`` SUMMARY with ``partial_unexpected_count=example_rows`` gives counts, percentages and the
    first unexpected values with their index (row number or device id) without materialising every
    unexpected row.
    """
    gx = import_gx()
    context = _context(gx, docs_dir)
    actions = []
    if docs_dir is not None:
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE]))
    source = context.data_sources.add_pandas("airwatt")
    results: dict[str, Any] = {}
    for spec in tqdm(suites, desc="validating", unit="suite", disable=None, leave=False):
        batch = source.add_dataframe_asset(spec.frame).add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(name=spec.name, expectations=spec.expectations)
        )
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=spec.name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=spec.name,
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": example_rows},
            )
        )
        t0 = time.perf_counter()
        frame = frames[spec.frame]
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        results[spec.name] = next(iter(run.run_results.values()))
        log.debug(
            "suite %s: %d rows, %d expectations, success=%s, %.2f s",
            spec.name,
            len(frame),
            len(spec.expectations),
            run.success,
            time.perf_counter() - t0,
        )
    return results
