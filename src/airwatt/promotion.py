"""Promotion: the champion rule and the fair gate that applies it.

Every new registered version gets the candidate alias (airwatt.tracking.register); ``promote`` moves the
champion alias to it only when it beats the current champion (rule in params.yaml ``register``: ``beats``)
on the selected data less everything either model trained or validated on (their provenance,
airwatt.data_ranges): a champion must not keep its place, nor a candidate win it, on data it has seen. No
such data: the champion stays, and the reason says so. A candidate whose provenance is unknown (an older
bundle) is never compared; a champion whose provenance is unknown is compared on data disjoint from the
candidate's, with a warning (its possible advantage only keeps it in place). Decisions: docs/metrics.md,
"Overlap with training, and the fair champion gate".

Reports are ``airwatt.results.EvaluationReport``s and the decision file a ``PromotionReport`` (typed, the
same JSON as before); the rule's metric stays a dotted path of params.yaml (``mean.f1``), looked up by field.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from airwatt.errors import ConfigError
from airwatt.mlflow_store import client, tracking_uri
from airwatt.model_uri import (
    RegistryVersion,
    model_spec,
    parse_model_uri,
    registry_version,
    version_by_alias,
    version_of_run,
)
from airwatt.models.bundle import ModelLoadError
from airwatt.results import EvaluationReport, PromotionReport, dotted
from airwatt.tracking import log_evaluation

if TYPE_CHECKING:
    from airwatt.config import RegisterParams
    from airwatt.data_ranges import DataRanges

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ the champion rule
def metric_value(report: EvaluationReport, path: str) -> float | None:
    """``report.mean.f1`` for ``"mean.f1"`` (``appliances.fridge.f1``: a table by key); None where missing or
    undefined (null/NaN)."""
    node = dotted(report, path)
    if node is None:
        return None
    if not isinstance(node, int | float) or isinstance(node, bool):
        raise ConfigError(f"register: metric {path!r} is not a number in the evaluation ({node!r})")
    value = float(node)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def beats(candidate: EvaluationReport, champion: EvaluationReport, cfg: RegisterParams) -> Decision:
    """Does the candidate's evaluation beat the champion's under ``cfg``'s rule?

    The primary metric must improve by more than ``min_improvement``; a smaller difference either way is a
    tie, won only by a strictly better tie-breaker. An undefined candidate metric never wins; an undefined
    champion metric loses to a defined one. A full tie keeps the champion.
    """
    for metric, higher, tol in (
        (cfg.metric, cfg.higher_is_better, cfg.min_improvement),
        (cfg.tie_breaker, cfg.tie_breaker_higher_is_better, 0.0),
    ):
        c, h = metric_value(candidate, metric), metric_value(champion, metric)
        if c is None:
            return Decision(False, f"candidate {metric} is undefined")
        if h is None:
            return Decision(True, f"champion {metric} is undefined, candidate {metric}={c:.4g}")
        gain = (c - h) if higher else (h - c)
        if gain > tol:
            return Decision(True, f"{metric} {c:.4g} vs champion {h:.4g}")
        if gain < -tol:
            return Decision(False, f"{metric} {c:.4g} vs champion {h:.4g}")
    return Decision(False, f"tie on {cfg.metric} and {cfg.tie_breaker}: the champion stays")


# ------------------------------------------------------------------------------------------- promotion
class Evaluator(Protocol):
    """``evaluate_model(model, out_json, is_candidate, exclude)``: airwatt.evaluate of ``model`` on the chosen
    data with nothing inside ``exclude`` scored (None: everything); the report, also written to ``out_json``.
    Raises airwatt.data_ranges.NoDisjointData when the exclusion leaves nothing to score."""

    def __call__(
        self, model: str | Path, out: Path, is_candidate: bool, exclude: DataRanges | None, /
    ) -> EvaluationReport: ...


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided; ``as_json()``: promotion.json, the DVC metrics file of the evaluate stage."""

    model_name: str
    candidate_version: str
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    candidate_overlaps_training: bool | None = None  # its report's data vs its own training; None: unknown
    compared_on: DataRanges | None = None  # the data candidate and champion were compared on

    def as_json(self) -> PromotionReport:
        """The typed promotion.json (``.model_dump(mode="json")`` is the file's content)."""

        def num(v: str | None) -> int | None:
            return int(v) if v is not None else None

        return PromotionReport(
            model_name=self.model_name,
            candidate_version=int(self.candidate_version),
            champion_version_before=num(self.champion_before),
            champion_version=num(self.champion_after),
            promoted=self.promoted,
            reason=self.reason,
            metric=self.metric,
            candidate_metric=self.candidate_value,
            champion_metric=self.champion_value,
            candidate_overlaps_training=self.candidate_overlaps_training,
            compared_devices=None if self.compared_on is None else self.compared_on.devices,
            compared_hours=None if self.compared_on is None else round(self.compared_on.hours(), 6),
        )


def candidate_version(candidate: str | Path, cfg: RegisterParams, uri: str | None = None) -> RegistryVersion:
    """The registry version of ``candidate``: a bundle directory (found by the run in its provenance), or a
    ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI of ``cfg.model_name``."""
    from airwatt.models.bundle import read_spec

    uri = uri or tracking_uri()
    ref = parse_model_uri(candidate)
    if ref.path is not None:
        run_id = read_spec(ref.path).provenance.get("run_id")
        mv = version_of_run(cfg.model_name, run_id, uri) if run_id else None
        if mv is None:
            raise ModelLoadError(
                f"{ref.uri}: this bundle (run {run_id}) is not a registered version of {cfg.model_name!r} at "
                f"tracking URI {uri}; train it with `airwatt train` against this store"
            )
        return RegistryVersion(cfg.model_name, str(mv.version), None, mv.run_id)
    if ref.kind != "registered" or ref.name != cfg.model_name:
        prefix = f"models:/{cfg.model_name}"
        raise ModelLoadError(
            f"{ref.uri}: promote takes a bundle directory or {prefix}@ALIAS or {prefix}/VERSION"
        )
    return registry_version(ref, uri)


def evaluated_of(report: EvaluationReport) -> DataRanges | None:
    """The data a report scored (its ``overlap.evaluated``); None when it does not say."""
    from airwatt.data_ranges import DataRanges

    if report.overlap is None:
        return None
    return DataRanges.from_json(report.overlap.evaluated, "evaluation report overlap.evaluated")


@dataclass(frozen=True)
class Comparison:
    """The fair comparison's outcome: the decision, both reports on the disjoint data (None when none was
    scored) and that data (None when the reports do not say)."""

    decision: Decision
    candidate_report: EvaluationReport | None = None
    champion_report: EvaluationReport | None = None
    compared_on: DataRanges | None = None


def compare_fairly(
    candidate: str | Path,
    champion: str,
    report: EvaluationReport,
    evaluate_model: Evaluator,
    cfg: RegisterParams,
    uri: str | None = None,
) -> Comparison:
    """Candidate against champion on the selected data less everything either trained or validated on.

    ``report`` is the candidate's evaluation of the whole selection: when it already is disjoint from both
    (the usual held-out test split) it is reused, else the candidate is evaluated again without that data.
    A candidate of unknown provenance is not compared (it could be scored on its own training data); a
    champion of unknown provenance is, on data disjoint from the candidate's, with a warning: whatever it
    trained on can only make it harder to beat, never hand the alias to a worse model.
    """
    from airwatt.data_ranges import NoDisjointData, seen_by

    candidate_seen = seen_by(model_spec(candidate, uri).provenance)
    if candidate_seen is None:
        return Comparison(
            Decision(
                False,
                "the candidate's provenance does not record the data it trained and validated on (a bundle "
                "from before data ranges were recorded): no fair comparison is possible, the champion stays",
            )
        )
    champion_seen = seen_by(model_spec(champion, uri).provenance)
    if champion_seen is None:
        log.warning(
            "champion %s does not record the data it trained and validated on: comparing on data disjoint "
            "from the candidate's only (a champion scored on its own training data can only look better)",
            champion,
        )
    exclude = candidate_seen if champion_seen is None else candidate_seen | champion_seen
    whose = "both models'" if champion_seen is not None else "the candidate's (the champion's are unknown)"
    nothing = Decision(
        False, f"no evaluation data disjoint from {whose} training and validation: the champion stays"
    )
    evaluated = evaluated_of(report)
    if evaluated is not None and not evaluated - exclude:
        return Comparison(nothing)
    with tempfile.TemporaryDirectory(prefix="airwatt-promote-") as tmp:
        try:
            if evaluated is not None and not evaluated & exclude:
                candidate_report = report
            else:
                candidate_report = evaluate_model(candidate, Path(tmp) / "candidate.json", True, exclude)
            champion_report = evaluate_model(champion, Path(tmp) / "champion.json", False, exclude)
        except NoDisjointData as e:
            log.info("%s", e)
            return Comparison(nothing)
    compared = evaluated_of(candidate_report)
    decision = beats(candidate_report, champion_report, cfg)
    where = f"disjoint from {whose} training and validation"
    if compared is not None:
        where = f"on {len(compared.devices)} device(s), {compared.hours():.4g} h {where}"
    return Comparison(
        Decision(decision.promote, f"{decision.reason} ({where})"),
        candidate_report,
        champion_report,
        compared,
    )


def promote(
    candidate: str | Path,
    evaluate_model: Evaluator,
    cfg: RegisterParams,
    *,
    report_path: Path,
    split_tag: str,
    uri: str | None = None,
) -> Promotion:
    """Evaluate the candidate (report to ``report_path``), log its metrics to its run, and give it the
    champion alias when it beats the current champion on data neither trained nor validated on
    (``compare_fairly``; rule: ``beats``). When no such data exists the champion stays and the reason says so.

    With no champion yet the candidate becomes champion (the Promotion records whether its evaluation
    overlapped its own training); a version that already is champion stays so.
    """
    uri = uri or tracking_uri()
    c = client(uri)
    mv = candidate_version(candidate, cfg, uri)
    champion = version_by_alias(cfg.model_name, cfg.champion_alias, uri)
    report = evaluate_model(candidate, report_path, True, None)
    if mv.run_id:
        doc = report.model_dump(mode="json")
        log_evaluation(mv.run_id, doc, f"eval_{split_tag}", uri)
        c.log_dict(mv.run_id, doc, f"evaluation/{split_tag}.json")
    overlap = report.overlap  # None in a report that does not say (written before overlap was recorded)
    overlaps = overlap.with_training if overlap is not None else None
    comparison = None
    if champion is None:
        note = ""
        if overlaps is True:
            note = " (its evaluation overlaps its own training data)"
        elif overlap is not None and overlaps is None:
            note = " (its provenance is unknown)"
        decision = Decision(True, f"no champion yet{note}")
    elif str(champion.version) == mv.version:
        decision = Decision(False, f"version {mv.version} already is the champion")
    else:
        champion_uri = f"models:/{cfg.model_name}/{champion.version}"
        comparison = compare_fairly(candidate, champion_uri, report, evaluate_model, cfg, uri)
        decision = comparison.decision
    if decision.promote:
        c.set_registered_model_alias(cfg.model_name, cfg.champion_alias, mv.version)
    c.set_model_version_tag(cfg.model_name, mv.version, "promotion", decision.reason)
    after = mv.version if decision.promote else (champion.version if champion else None)
    log.info(
        "%s version %s %s @%s: %s",
        cfg.model_name,
        mv.version,
        "is now" if decision.promote else "is not",
        cfg.champion_alias,
        decision.reason,
    )
    compared = comparison.candidate_report if comparison else None
    champion_report = comparison.champion_report if comparison else None
    return Promotion(
        cfg.model_name,
        str(mv.version),
        str(champion.version) if champion else None,
        str(after) if after is not None else None,
        decision.promote,
        decision.reason,
        cfg.metric,
        metric_value(compared if compared is not None else report, cfg.metric),
        metric_value(champion_report, cfg.metric) if champion_report else None,
        overlaps,
        comparison.compared_on if comparison else None,
    )
