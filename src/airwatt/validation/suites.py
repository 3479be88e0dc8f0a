"""The expectation suites: what each check means, written as Great Expectations' built-in expectations.

Each expectation carries ``meta={"check": name}`` (the key of ``validate.severity`` in params.yaml) and GX's
own ``severity`` (critical for "fail", warning for "warn"), so Data Docs show both. A check fails when any of
its expectations fails; some checks have a row-level expectation (which gives example rows) and a per-device
one (which names every offending device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from airwatt.appliances import APPLIANCES
from airwatt.config import ValidateParams
from airwatt.dataset.schema import (
    GROUND_TRUTH_FILE,
    LABEL_SOURCES,
    LABELS_FILE,
    LABELS_REQUIRED,
    LABELS_SCHEMA,
    READINGS_FILE,
    READINGS_SCHEMA,
    Manifest,
)
from airwatt.errors import ConfigError

CHECKS: dict[str, str] = {
    "schema": "columns, dtypes, no null keys, devices known to the manifest",
    "timestamps_increasing": "UTC timestamps strictly increasing per device, no duplicates",
    "cadence": "intervals within tolerance of the nominal interval (or a whole multiple: a gap)",
    "gap_fraction": "missing slots (no row or null power_w) over the expected slots of the device's span",
    "power_range": "power finite and within [0, rated max of the device]",
    "outage_rows": "rows where every channel reads 0 (power_w == 0, voltage/current 0 or null)",
    "label_span": "label intervals inside their device's data span",
    "label_order": "label start < end",
    "label_known": "label appliances in the vocabulary and in the device's inventory",
    "submeter_sum": "sub-metered sum not above the aggregate beyond the tolerance",
}

# Dtypes as pandas reads the format's Parquet files (see dataset/schema.py). GX compares dtype.type names;
# "Timestamp" is a timezone-aware datetime (naive timestamps read as datetime64 and fail).
_DTYPES = {
    "string": "str",
    "timestamp[ms, tz=UTC]": "Timestamp",
    "float": "float32",
    "bool": "bool",
    "int64": "int64",
}


@dataclass
class SuiteSpec:
    """One expectation suite, run on one frame whose index is ``index_name`` (a row number or device)."""

    name: str
    frame: str  # key of the frame in the runner's frame map
    index_name: str  # what the frame's index means, for messages: "readings.parquet row", "device"
    expectations: list[Any] = field(default_factory=list)


def _gx_expectations() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations.expectations as gxe

    return gxe


class _Builder:
    """Adds expectations tagged with their check and severity."""

    def __init__(self, cfg: ValidateParams, columns: dict[str, list[str]]) -> None:
        self.gxe = _gx_expectations()
        self.cfg = cfg
        self.columns = columns  # frame name -> columns present (column expectations only for those)

    def tag(self, check: str, expectation: Any) -> Any:
        sev = self.cfg.severity[check]
        expectation.meta = {"check": check, "severity": sev}
        expectation.notes = f"AirWatt check `{check}` (severity: {sev}): {CHECKS[check]}."
        expectation.severity = "critical" if sev == "fail" else "warning"
        return expectation

    def power_range(self, low_column: str, high_column: str) -> list[Any]:
        """power_range: ``low_column`` >= 0 and ``high_column`` <= the row's rated_max_w (nulls skipped)."""
        return [
            self.tag("power_range", self.gxe.ExpectColumnValuesToBeBetween(column=low_column, min_value=0)),
            self.tag(
                "power_range",
                self.gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="rated_max_w",
                    column_B=high_column,
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                ),
            ),
        ]

    def if_present(self, frame: str, check: str, expectation: Any) -> list[Any]:
        """[the tagged expectation] if every column it names is in the frame, else [] (schema reports it)."""
        kw = expectation.configuration.kwargs
        named = [kw[k] for k in ("column", "column_A", "column_B") if k in kw] + list(
            kw.get("column_list", [])
        )
        return [self.tag(check, expectation)] if set(named) <= set(self.columns[frame]) else []


def check_severities(cfg: ValidateParams) -> None:
    """Every check has a severity in params.yaml, and no unknown check is named there."""
    missing = sorted(set(CHECKS) - set(cfg.severity))
    unknown = sorted(set(cfg.severity) - set(CHECKS))
    if missing or unknown:
        raise ConfigError(
            f"validate.severity: missing {missing}, unknown {unknown}; the checks are {', '.join(CHECKS)}"
        )


def _schema(
    b: _Builder, frame: str, dtypes: dict[str, str], not_null: list[str], device_ids: list[str]
) -> list[Any]:
    """Exact column set, then dtype / not-null / known-device for the columns that are there (a missing
    column is reported once, by the column-set expectation)."""
    gxe = b.gxe
    present = set(b.columns[frame])
    out = [b.tag("schema", gxe.ExpectTableColumnsToMatchSet(column_set=list(dtypes), exact_match=True))]
    out += [
        b.tag("schema", gxe.ExpectColumnValuesToBeOfType(column=c, type_=t))
        for c, t in dtypes.items()
        if c in present
    ]
    out += [b.tag("schema", gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in not_null if c in present]
    if "device_id" in present:
        out.append(b.tag("schema", gxe.ExpectColumnValuesToBeInSet(column="device_id", value_set=device_ids)))
    return out


def _arrow_dtypes(schema: Any) -> dict[str, str]:
    return {f.name: _DTYPES[str(f.type)] for f in schema}


def readings_suites(b: _Builder, manifest: Manifest, *, derived: bool) -> list[SuiteSpec]:
    """Raw readings (schema, duplicates) and, when derivable, per-row and per-device judgements."""
    gxe, cfg = b.gxe, b.cfg
    raw = SuiteSpec("airwatt.readings", "readings", f"{READINGS_FILE} row")
    raw.expectations = [
        *_schema(
            b, "readings", _arrow_dtypes(READINGS_SCHEMA), ["device_id", "timestamp"], manifest.device_ids
        ),
        *b.if_present(
            "readings",
            "timestamps_increasing",
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["device_id", "timestamp"]),
        ),
    ]
    if not derived:
        return [raw]
    per_row = SuiteSpec("airwatt.readings_per_row", "readings_per_row", f"{READINGS_FILE} row")
    per_row.expectations = [
        b.tag(
            "timestamps_increasing",
            gxe.ExpectColumnValuesToBeBetween(column="interval_s", min_value=0, strict_min=True),
        ),
        b.tag(
            "cadence",
            gxe.ExpectColumnValuesToBeBetween(
                column="cadence_error_s",
                min_value=0,
                max_value=cfg.cadence_tolerance_s,
                mostly=cfg.min_cadence_fraction,
            ),
        ),
        *b.power_range("power_w", "power_w"),
        b.tag(
            "outage_rows",
            gxe.ExpectColumnValuesToBeInSet(
                column="is_outage", value_set=[False], mostly=1 - cfg.max_outage_fraction
            ),
        ),
    ]
    devices = SuiteSpec("airwatt.devices", "devices", "device")
    between = gxe.ExpectColumnValuesToBeBetween
    devices.expectations = [
        b.tag("timestamps_increasing", between(column="non_increasing_rows", min_value=0, max_value=0)),
        b.tag("cadence", between(column="cadence_fraction", min_value=cfg.min_cadence_fraction, max_value=1)),
        b.tag("gap_fraction", between(column="gap_fraction", min_value=0, max_value=cfg.max_gap_fraction)),
        b.tag("power_range", between(column="power_out_of_range_rows", min_value=0, max_value=0)),
        b.tag(
            "outage_rows", between(column="outage_fraction", min_value=0, max_value=cfg.max_outage_fraction)
        ),
        b.tag(
            "submeter_sum",
            between(
                column="submeter_excess_fraction", min_value=0, max_value=cfg.max_submeter_excess_fraction
            ),
        ),
    ]
    return [raw, per_row, devices]


def ground_truth_suites(b: _Builder, manifest: Manifest, *, derived: bool) -> list[SuiteSpec]:
    """Raw ground truth (schema, duplicates) and, when derivable, power range and sub-meter sum per row."""
    gxe, cfg = b.gxe, b.cfg
    apps = list(manifest.appliances)
    raw = SuiteSpec("airwatt.ground_truth", "ground_truth", f"{GROUND_TRUTH_FILE} row")
    dtypes = {"device_id": "str", "timestamp": "Timestamp", **{a: "float32" for a in apps}}
    raw.expectations = [
        *_schema(b, "ground_truth", dtypes, ["device_id", "timestamp"], manifest.device_ids),
        *b.if_present(
            "ground_truth",
            "timestamps_increasing",
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["device_id", "timestamp"]),
        ),
    ]
    if not derived:
        return [raw]
    per_row = SuiteSpec("airwatt.ground_truth_per_row", "ground_truth_per_row", f"{GROUND_TRUTH_FILE} row")
    per_row.expectations = [
        # Each appliance's power within [0, the device's rated max], via the row's smallest and largest value.
        *b.power_range("submetered_min_w", "submetered_max_w"),
        b.tag(
            "timestamps_increasing",
            gxe.ExpectColumnValuesToBeBetween(column="interval_s", min_value=0, strict_min=True),
        ),
        b.tag(
            "submeter_sum",
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="allowed_w",
                column_B="submetered_sum_w",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
                mostly=1 - cfg.max_submeter_excess_fraction,
            ),
        ),
    ]
    return [raw, per_row]


def labels_suites(b: _Builder, manifest: Manifest, inventory: list[str], *, derived: bool) -> list[SuiteSpec]:
    """Raw labels (schema, vocabulary) and, when derivable, order, span and inventory per label."""
    gxe = b.gxe
    raw = SuiteSpec("airwatt.labels", "labels", f"{LABELS_FILE} row")
    raw.expectations = [
        *_schema(b, "labels", _arrow_dtypes(LABELS_SCHEMA), list(LABELS_REQUIRED), manifest.device_ids),
        *b.if_present(
            "labels",
            "schema",
            gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(LABEL_SOURCES)),
        ),
        *b.if_present(
            "labels",
            "label_known",
            gxe.ExpectColumnValuesToBeInSet(column="appliance", value_set=sorted(APPLIANCES)),
        ),
    ]
    if not derived:
        return [raw]
    per_row = SuiteSpec("airwatt.labels_per_row", "labels_per_row", f"{LABELS_FILE} row")
    pair = gxe.ExpectColumnPairValuesAToBeGreaterThanB
    per_row.expectations = [
        b.tag("label_order", pair(column_A="end_utc", column_B="start_utc", ignore_row_if="neither")),
        # "neither": a label of a device without readings has no span (NaT) and must fail, not be skipped.
        b.tag(
            "label_span",
            pair(column_A="start_utc", column_B="span_start_utc", or_equal=True, ignore_row_if="neither"),
        ),
        b.tag(
            "label_span",
            pair(column_A="span_end_utc", column_B="end_utc", or_equal=True, ignore_row_if="neither"),
        ),
        b.tag("label_known", gxe.ExpectColumnValuesToBeInSet(column="device_appliance", value_set=inventory)),
    ]
    return [raw, per_row]


def build_suites(
    cfg: ValidateParams,
    manifest: Manifest,
    inventory: list[str],
    derived: dict[str, bool],
    columns: dict[str, list[str]],
) -> list[SuiteSpec]:
    """All suites in running order; ``derived[table]`` says whether that table's derived frames exist,
    ``columns[table]`` which columns the raw table has."""
    check_severities(cfg)
    b = _Builder(cfg, columns)
    return [
        *readings_suites(b, manifest, derived=derived["readings"]),
        *ground_truth_suites(b, manifest, derived=derived["ground_truth"]),
        *labels_suites(b, manifest, inventory, derived=derived["labels"]),
    ]
