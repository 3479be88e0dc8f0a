"""The outcome of a validation run: per check and per expectation, with devices and example rows.

Built from GX's validation results; example rows come from GX's ``partial_unexpected_index_list`` (row numbers
of the Parquet files, since every frame keeps them as its index), looked up in the tables for device and
timestamp. A per-device expectation names devices; its example rows are mapped back from the derived frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from airwatt.validation.checks import Derived, Limits, Tables
from airwatt.validation.suites import CHECKS, SuiteSpec


@dataclass(frozen=True)
class ExampleRow:
    """One offending row: where it is, its device and time, and the values GX judged."""

    where: str  # "readings.parquet row 1234" or "device d-0001"
    device_id: str | None
    timestamp: str | None
    value: str

    def __str__(self) -> str:
        parts = [self.where]
        if self.device_id is not None and not self.where.startswith("device "):
            parts.append(f"device {self.device_id}")
        if self.timestamp is not None:
            parts.append(self.timestamp)
        return ", ".join(parts) + (f": {self.value}" if self.value else "")


@dataclass(frozen=True)
class ExpectationOutcome:
    """One GX expectation's result, reduced to what a user needs."""

    check: str
    severity: str
    suite: str
    expectation: str  # GX type, e.g. expect_column_values_to_be_between
    what: str  # its arguments in short, e.g. "power_w in [0, -]"
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: str | None = None
    devices: tuple[str, ...] = ()
    examples: tuple[ExampleRow, ...] = ()
    error: str | None = None
    per_device: bool = False  # judged on the per-device frame (unexpected_percent is a share of devices)

    def describe(self) -> str:
        text = f"{self.suite}: {self.expectation}({self.what})"
        if self.error:
            return f"{text}: raised {self.error}"
        if self.unexpected_count is not None and self.element_count is not None:
            pct = f" ({self.unexpected_percent:.4g}%)" if self.unexpected_percent is not None else ""
            return f"{text}: {self.unexpected_count:,d} of {self.element_count:,d} unexpected{pct}"
        return f"{text}: observed {self.observed}" if self.observed is not None else text


@dataclass(frozen=True)
class CheckOutcome:
    """One named check (a key of validate.severity): it passes when all its expectations pass."""

    name: str
    severity: str
    expectations: tuple[ExpectationOutcome, ...]
    not_run: str | None = None  # why its expectations could not run (an unusable table)

    @property
    def success(self) -> bool:
        return self.not_run is None and all(e.success for e in self.expectations)

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(e for e in self.expectations if not e.success)

    @property
    def devices(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for e in self.failed:
            seen.update(dict.fromkeys(e.devices))
        return tuple(seen)

    def _counted(self) -> list[ExpectationOutcome]:
        """Row-level expectations when the check has any (percent of rows), else per-device ones."""
        rows = [e for e in self.expectations if not e.per_device]
        return rows or list(self.expectations)

    @property
    def unexpected_percent(self) -> float:
        """The largest unexpected percentage among the check's row-level expectations."""
        vals = [e.unexpected_percent for e in self._counted() if e.unexpected_percent is not None]
        return max(vals, default=0.0)

    @property
    def unexpected_count(self) -> int:
        return max((e.unexpected_count or 0 for e in self._counted()), default=0)


@dataclass
class ValidationResult:
    """What `airwatt data validate` reports; ``success`` is False iff a check of severity "fail" failed."""

    dataset: Path
    checks: tuple[CheckOutcome, ...]
    rows: dict[str, int]
    devices: int  # in the manifest, plus any found only in readings
    device_stats: dict[str, dict[str, float]]
    seconds: float = 0.0
    docs_index: Path | None = None
    summary_path: Path | None = None
    published_to: Path | None = None
    publish_requested: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(c.success for c in self.checks if c.severity == "fail")

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.success and c.severity == "fail"]

    @property
    def warned_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.success and c.severity == "warn"]

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)

    def format_text(self) -> str:
        """A human summary: verdict, each failing check with its expectations, devices and example rows."""
        verdict = "PASSED" if self.success else "FAILED"
        lines = [
            f"Validation of {self.dataset}: {verdict} ({len(self.failed_checks)} failed, "
            f"{len(self.warned_checks)} warnings, {self.rows.get('readings', 0):,d} readings, "
            f"{self.devices} devices, {self.seconds:.1f} s)"
        ]
        for c in self.checks:
            if c.success:
                continue
            tag = "FAIL" if c.severity == "fail" else "WARN"
            lines.append(f"  {tag} {c.name} [severity {c.severity}]: {CHECKS[c.name]}")
            if c.not_run:
                lines.append(f"      not run: {c.not_run}")
            for e in c.failed:
                lines.append(f"      expectation {e.describe()}")
                if e.devices:
                    lines.append(f"        devices: {_list(e.devices)}")
                lines += [f"        e.g. {x}" for x in e.examples]
        passed = [c.name for c in self.checks if c.success]
        if passed:
            lines.append(f"  ok: {', '.join(passed)}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.docs_index is not None:
            lines.append(f"Data Docs: {self.docs_index}")
        if self.summary_path is not None:
            lines.append(f"Summary: {self.summary_path}")
        if self.published_to is not None:
            lines.append(f"Published: {self.published_to}")
        elif self.publish_requested is not None:
            lines.append(f"Not published: {self.publish_requested} left untouched (validation failed)")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (numbers and booleans only, for `dvc metrics`)."""
        return {
            "success": self.success,
            "rows": dict(self.rows),
            "devices": self.devices,
            "failed_checks": len(self.failed_checks),
            "warned_checks": len(self.warned_checks),
            "checks": {
                c.name: {
                    "success": c.success,
                    "severity_fail": c.severity == "fail",
                    "ran": c.not_run is None,
                    "unexpected_percent": round(c.unexpected_percent, 6),
                    "unexpected_count": c.unexpected_count,
                    "failing_devices": len(c.devices),
                }
                for c in self.checks
            },
            "per_device": {
                d: {k: round(v, 6) for k, v in stats.items() if not math.isnan(v)}
                for d, stats in self.device_stats.items()
            },
        }


def _list(items: tuple[str, ...], limit: int = 20) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# ---------------------------------------------------------------------------------------------- building
def _what(kwargs: dict[str, Any]) -> str:
    """The arguments of an expectation in short."""
    if "column_set" in kwargs:
        return f"columns = {sorted(kwargs['column_set'])}"
    if "column_list" in kwargs:
        return f"unique ({', '.join(kwargs['column_list'])})"
    if "column_A" in kwargs:
        op = ">=" if kwargs.get("or_equal") else ">"
        text = f"{kwargs['column_A']} {op} {kwargs['column_B']}"
    else:
        text = str(kwargs.get("column", ""))
        if "type_" in kwargs:
            text += f" of type {kwargs['type_']}"
        if "value_set" in kwargs:
            vs = list(kwargs["value_set"])
            text += f" in {vs[:6]}{'...' if len(vs) > 6 else ''}"
        if "min_value" in kwargs or "max_value" in kwargs:
            lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
            text += f" in [{'-' if lo is None else lo}, {'-' if hi is None else hi}]"
    mostly = kwargs.get("mostly")
    if mostly is not None and mostly < 1:
        text += f", mostly {mostly:g}"
    return text


def _error(info: Any) -> str | None:
    """The exception message GX caught while evaluating an expectation, if any."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for v in info.values():  # 1.x may key exception info by metric
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return None


class _Lookup:
    """Maps frame indices back to the source tables for device and timestamp."""

    def __init__(self, tables: Tables, derived: Derived, lim: Limits, example_rows: int) -> None:
        self.tables = tables
        self.derived = derived
        self.lim = lim
        self.n = example_rows

    def source(self, frame: str) -> tuple[pd.DataFrame, str]:
        if frame.startswith("readings"):
            return self.tables.readings, "timestamp"
        if frame.startswith("ground_truth"):
            return self.tables.ground_truth, "timestamp"
        return self.tables.labels, "start"

    def row_example(self, spec: SuiteSpec, index: Any, value: Any) -> ExampleRow:
        table, time_col = self.source(spec.frame)
        device, ts = None, None
        row = int(index) if not isinstance(index, dict) else None
        if row is not None and 0 <= row < len(table):
            if "device_id" in table.columns:
                device = _str_or_none(table["device_id"].iloc[row])
            if time_col in table.columns:
                ts = _iso(table[time_col].iloc[row])
        return ExampleRow(f"{spec.index_name} {index}", device, ts, _value(value))

    def device_rows(self, check: str, devices: tuple[str, ...]) -> list[ExampleRow]:
        """Rows of failing devices that show why a per-device expectation failed (from derived frames)."""
        d = self.derived
        if d.readings is None:
            return []
        r, rows = d.readings, self.tables.readings
        mask: np.ndarray
        frame = "readings"
        cols: list[str]
        if check == "gap_fraction":
            after_gap = (r["interval_s"] > self.lim.interval_s + self.lim.cadence_tolerance_s).to_numpy()
            mask = after_gap | np.isnan(r["power_w"].to_numpy())
            cols = ["interval_s", "power_w"]
        elif check == "cadence":
            mask = (r["cadence_error_s"] > self.lim.cadence_tolerance_s).to_numpy()
            cols = ["interval_s"]
        elif check == "outage_rows":
            mask = r["is_outage"].to_numpy()
            cols = ["power_w"]
        elif check == "timestamps_increasing":
            mask = (r["interval_s"] <= 0).to_numpy()
            cols = ["interval_s"]
        elif check == "power_range":
            p, m = r["power_w"], r["rated_max_w"]
            mask = (p.notna() & ~((p >= 0) & (p <= m))).to_numpy()
            cols = ["power_w", "rated_max_w"]
        elif check == "submeter_sum" and d.ground_truth is not None:
            g = d.ground_truth
            mask = (g["submetered_sum_w"] > g["allowed_w"]).to_numpy()
            frame, r, rows = "ground_truth", g, self.tables.ground_truth
            cols = ["submetered_sum_w", "aggregate_w", "allowed_w"]
        else:
            return []
        out: list[ExampleRow] = []
        per_device = max(1, self.n // max(len(devices), 1))
        for dev in devices[: self.n]:
            hits = np.flatnonzero(mask & (rows["device_id"] == dev).to_numpy())[:per_device]
            for i in hits:
                value = ", ".join(f"{c}={_value(r[c].iloc[i])}" for c in cols)
                out.append(
                    ExampleRow(f"{frame}.parquet row {i}", dev, _iso(rows["timestamp"].iloc[i]), value)
                )
        return out[: self.n]


def _str_or_none(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _iso(v: Any) -> str | None:
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    try:
        return pd.Timestamp(v).isoformat().replace("+00:00", "Z")
    except (TypeError, ValueError):
        return str(v)


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v)
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _outcome(spec: SuiteSpec, r: Any, lookup: _Lookup) -> ExpectationOutcome:
    cfg = r.expectation_config
    meta = cfg.meta or {}
    res = r.result or {}
    check = meta.get("check", "schema")
    devices: tuple[str, ...] = ()
    examples: list[ExampleRow] = []
    idx = res.get("partial_unexpected_index_list") or []
    vals = res.get("partial_unexpected_list") or [None] * len(idx)
    if spec.frame == "devices":
        if not r.success:
            devices = tuple(str(i.get("device_id") if isinstance(i, dict) else i) for i in idx)
            examples = lookup.device_rows(check, devices)
    else:
        examples = [lookup.row_example(spec, i, v) for i, v in zip(idx, vals, strict=False)]
        devices = tuple(dict.fromkeys(e.device_id for e in examples if e.device_id is not None))
    observed = res.get("observed_value")
    mismatched = (res.get("details") or {}).get("mismatched")
    if mismatched:  # ExpectTableColumnsToMatchSet: say which columns, not the whole list
        observed = "; ".join(f"{k} {v}" for k, v in mismatched.items() if v)
    return ExpectationOutcome(
        check=check,
        severity=meta.get("severity", "fail"),
        suite=spec.name,
        expectation=cfg.type,
        what=_what(dict(cfg.kwargs)),
        success=bool(r.success),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        observed=None if observed is None else _value(observed),
        devices=devices,
        examples=tuple(examples),
        error=_error(r.exception_info),
        per_device=spec.frame == "devices",
    )


def build_checks(
    suites: list[SuiteSpec],
    gx_results: dict[str, Any],
    lookup: _Lookup,
    severities: dict[str, str],
    not_run: dict[str, str],
) -> tuple[CheckOutcome, ...]:
    """Group expectation outcomes by check, in the order of CHECKS."""
    by_check: dict[str, list[ExpectationOutcome]] = {c: [] for c in CHECKS}
    for spec in suites:
        for r in gx_results[spec.name].results:
            o = _outcome(spec, r, lookup)
            by_check[o.check].append(o)
    return tuple(
        CheckOutcome(name=c, severity=severities[c], expectations=tuple(by_check[c]), not_run=not_run.get(c))
        for c in CHECKS
    )


def make_lookup(tables: Tables, derived: Derived, lim: Limits, example_rows: int) -> _Lookup:
    return _Lookup(tables, derived, lim, example_rows)
