"""A fair champion gate: a model records the devices and time ranges it trained and validated on, `airwatt
evaluate` says when its data overlaps them, and promotion compares candidate and champion only on data that
neither has seen (airwatt.data_ranges, airwatt.promotion.promote).

The promotion tests train two no-skill baselines for real (validation only, so seconds) on a 4-device, 2-hour
dataset of one appliance, and register them in a local sqlite store:

- device ``a``: the fridge is on all the time at 100 W; ``b``, ``c``, ``v``: on 20 of every 60 min at 100 W;
- the champion is the ``mean`` baseline trained on ``a`` (validated on ``v``): it predicts 100 W, on,
  everywhere, which is perfect on ``a`` (MAE 0) and poor on ``b`` (MAE 66.7 W);
- the candidate is ``always_off`` trained on ``c`` (validated on ``v``): MAE 100 W on ``a``, 33.3 W on ``b``.

Scored on ``a`` and ``b`` together the champion looks better (33.3 vs 66.7 W), only because it trained on
``a``; on ``b``, which neither model has seen, the candidate is better.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, square_wave_device
from mlflow import MlflowClient
from typer.testing import CliRunner

from airwatt import promotion, tracking
from airwatt.appliances import APPLIANCES
from airwatt.cli import app
from airwatt.config import RegisterParams, load_params
from airwatt.data_ranges import DataRanges, seen_by, split_ranges, training_record
from airwatt.dataset import DatasetWriter, DeviceInfo
from airwatt.evaluate import evaluate, evaluate_bundle
from airwatt.labels import derive_labels
from airwatt.models import GapPolicy, ModelBundle, ModelSpec, NormStats, OnOffSpec, build_model, read_spec
from airwatt.models.frame import predict_frame
from airwatt.prepare import prepare
from airwatt.results import EvaluationReport
from airwatt.timeutil import epoch_ms
from airwatt.training.train import train

NAME = "airwatt-disaggregator"
T0 = "2026-01-05T00:00:00+00:00"
HOUR_MS = 3_600_000


def at(hours: float) -> int:
    return epoch_ms(T0) + round(hours * HOUR_MS)


def fridge_dataset(path: Path, devices: dict[str, bool], hours: float = 2) -> Path:
    """One appliance (fridge, 100 W); per device: always on (True) or on 20 of every 60 min (False)."""
    with DatasetWriter(path, name=path.name, appliances=["fridge"], interval_s=5) as w:
        for dev, always_on in devices.items():
            readings, gt = square_wave_device(dev, hours=hours)
            gt = gt.drop(columns="kettle")
            if always_on:
                gt["fridge"] = 100.0
            readings["power_w"] = 80.0 + gt["fridge"]
            labels = derive_labels(gt, ["fridge"], APPLIANCES, 5)
            info = DeviceInfo(device_id=dev, appliances=["fridge"], rated_max_w=10000)
            w.add_device(info, readings, ground_truth=gt, labels=labels)
    return path


def baseline_bundle(path: Path, arch: str, provenance: dict[str, Any], mean_w: float = 100.0) -> Path:
    spec = ModelSpec(
        arch=arch,
        appliances=["fridge"],
        window_length=1,
        target="midpoint",
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=150.0,
            aggregate_std_w=50.0,
            power_mean_w={"fridge": mean_w},
            power_std_w={"fridge": 50.0},
        ),
        on_off={"fridge": OnOffSpec.of(APPLIANCES["fridge"])},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
        provenance=provenance,
    )
    return ModelBundle(spec, build_model(spec)).save(path)


def record(train: dict[str, list[tuple[float, float]]], val: dict[str, list[tuple[float, float]]]) -> dict:
    """A provenance ``data_ranges`` record from hours after T0."""

    def of(spans: dict[str, list[tuple[float, float]]]) -> dict:
        return DataRanges.of({d: [(at(a), at(b)) for a, b in s] for d, s in spans.items()}).to_json()

    return {"data_ranges": {"train": of(train), "val": of(val)}}


# ------------------------------------------------------------------------------------ the range algebra
def test_ranges_merge_intersect_subtract_and_round_trip_as_iso_utc() -> None:
    x = DataRanges.of({"d": [(at(0), at(2)), (at(1), at(3)), (at(5), at(6))], "e": [(at(0), at(0))]})
    assert x.spans == {"d": ((at(0), at(3)), (at(5), at(6)))}  # merged; an empty span leaves no device
    y = DataRanges.of({"d": [(at(2), at(5.5))], "f": [(at(0), at(1))]})
    assert (x & y).spans == {"d": ((at(2), at(3)), (at(5), at(5.5)))}
    assert (x - y).spans == {"d": ((at(0), at(2)), (at(5.5), at(6)))}
    assert (x | y).devices == ["d", "f"] and (x | y).hours() == pytest.approx(6 + 1)
    assert x.to_json() == {
        "d": [[T0, "2026-01-05T03:00:00+00:00"], ["2026-01-05T05:00:00+00:00", "2026-01-05T06:00:00+00:00"]]
    }
    assert DataRanges.from_json(x.to_json()) == x
    assert not (x - x) and not DataRanges.empty()


def test_unknown_provenance_is_never_an_empty_set_and_fine_tuning_inherits_what_its_start_saw() -> None:
    assert seen_by({}) is None  # a bundle from before the record: unknown, not "saw nothing"
    site = record({"site": [(0, 24)]}, {"site": [(24, 36)]})
    start = record({"d-1": [(0, 48)]}, {"d-2": [(0, 48)]})
    tuned = seen_by({**site, "init_from": "models:/x/1", "init_provenance": start})
    assert tuned is not None and tuned.devices == ["d-1", "d-2", "site"]
    assert tuned.spans["site"] == ((at(0), at(36)),)  # train and val of the site, merged
    assert seen_by({**site, "init_from": "models:/x/1", "init_provenance": {"run_id": "old"}}) is None


def test_a_time_split_records_each_device_with_its_own_time_ranges(tmp_path: Path) -> None:
    """Fine-tuning and one-site data: the same device trains on its oldest hours and is tested on later ones;
    provenance is device + time ranges, so the later hours are not counted as seen."""
    data = fridge_dataset(tmp_path / "site", {"s": False}, hours=8)
    params = load_params(
        REPO / "params.yaml",
        overrides={"prepare.split_by": "time", "prepare.val_fraction": 0.25, "prepare.test_fraction": 0.25},
    )
    prepare(data, params, tmp_path / "prep")
    seen = training_record(tmp_path / "prep")
    assert seen == {
        "train": {"s": [[T0, "2026-01-05T04:00:00+00:00"]]},
        "val": {"s": [["2026-01-05T04:00:00+00:00", "2026-01-05T06:00:00+00:00"]]},
    }
    test = split_ranges(tmp_path / "prep", "test")
    assert not test & seen_by({"data_ranges": seen})  # type: ignore[operator]


# ----------------------------------------------------------------------------------- training records it
@pytest.mark.slow  # trains the session's small model when no other test did
def test_training_records_the_devices_and_ranges_it_trained_and_validated_on(trained_bundle: Path) -> None:
    """A real (tiny) training: the bundle's provenance names the train and validation devices of the split,
    each with the UTC span of its prepared grid, and no test device."""
    prepared = trained_bundle.parent / "prepared"
    split = json.loads((prepared / "split.json").read_text())
    ranges = read_spec(trained_bundle).provenance["data_ranges"]
    assert sorted(ranges) == ["train", "val"]
    assert sorted(ranges["train"]) == split["train"] and sorted(ranges["val"]) == split["val"]
    for name in ("train", "val"):
        index = json.loads((prepared / name / "index.json").read_text())
        for dev in index["devices"]:
            start = pd.Timestamp(dev["start"])
            end = start + pd.Timedelta(seconds=dev["length"] * index["interval_s"])
            assert ranges[name][dev["device_id"]] == [[start.isoformat(), end.isoformat()]]
    seen = seen_by(read_spec(trained_bundle).provenance)
    assert seen is not None and not set(seen.devices) & set(split["test"])


# ------------------------------------------------------------------------------------- evaluate says so
@pytest.mark.slow  # trains the session's small model when no other test did
def test_evaluate_warns_and_reports_when_its_data_overlaps_training(
    trained_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prepared = trained_bundle.parent / "prepared"
    data, split_file = trained_bundle.parent / "sim", prepared / "split.json"
    train_dev = json.loads(split_file.read_text())["train"][0]
    with caplog.at_level("WARNING", logger="airwatt.evaluate"):
        held_out = evaluate(trained_bundle, data, tmp_path / "test.json", split_file=split_file, split="test")
    assert held_out.overlap.with_training is False and held_out.overlap.devices == {}
    assert "overlaps the model's training" not in caplog.text
    with caplog.at_level("WARNING", logger="airwatt.evaluate"):
        seen = evaluate(trained_bundle, data, tmp_path / "train.json", split_file=split_file, split="train")
    assert seen.overlap.with_training is True
    assert list(seen.overlap.devices) == [train_dev] and seen.overlap.hours > 0
    assert "overlaps the model's training/validation data" in caplog.text and train_dev in caplog.text
    assert (
        json.loads((tmp_path / "train.json").read_text())["overlap"]
        == seen.model_dump(mode="json")["overlap"]
    )


def test_overlap_is_by_device_and_time_and_unknown_for_an_old_bundle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = fridge_dataset(tmp_path / "site", {"s": False, "t": False}, hours=8)
    trained = baseline_bundle(tmp_path / "m", "mean", record({"s": [(0, 4)]}, {"s": [(4, 6)]}))
    later = tmp_path / "split.json"  # the hours after training and validation, as a time split's test
    later.write_text(
        json.dumps(
            {
                "test": ["s", "t"],
                "time_ranges": {
                    "test": {
                        "s": ["2026-01-05T06:00:00+00:00", "2026-01-05T08:00:00+00:00"],
                        "t": ["2026-01-05T06:00:00+00:00", "2026-01-05T08:00:00+00:00"],
                    }
                },
            }
        )
    )
    disjoint = evaluate_bundle(ModelBundle.load(trained), data, split_file=later, split="test")
    assert disjoint.overlap.with_training is False
    assert disjoint.overlap.evaluated["s"] == [("2026-01-05T06:00:00+00:00", "2026-01-05T08:00:00+00:00")]
    whole = evaluate_bundle(ModelBundle.load(trained), data)
    assert whole.overlap.with_training is True
    assert whole.overlap.devices == {"s": [(T0, "2026-01-05T06:00:00+00:00")]}  # t never trained
    assert whole.overlap.hours == pytest.approx(6)

    legacy = baseline_bundle(tmp_path / "old", "mean", {"run_id": "from-before"})
    with caplog.at_level("WARNING", logger="airwatt.evaluate"):
        unknown = evaluate_bundle(ModelBundle.load(legacy), data)
    assert unknown.overlap.with_training is None and unknown.overlap.provenance == "unknown"
    assert "does not record the data it trained and validated on" in caplog.text


# ------------------------------------------------------------------------------------- the gate, for real
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The dataset, a local store with the champion (version 1) and the candidate (version 2) trained for
    real (module docstring), and version 3: the champion's bundle without its data ranges (an old one)."""
    root = tmp_path_factory.mktemp("gate")
    data = fridge_dataset(root / "fleet", {"a": True, "b": False, "c": False, "v": False})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)  # no git here: provenance records "unknown" commit, quickly
        versions = {}
        for role, model, train_on in (("champion", "mean", "a"), ("candidate", "always_off", "c")):
            held = sorted({"a", "b", "c"} - {train_on})
            params = load_params(
                REPO / "params.yaml",
                overrides={
                    "prepare.val_devices": ["v"],
                    "prepare.test_devices": held,
                    "train.num_workers": 0,
                    "train.batch_size": 256,
                    "train.limit_val_batches": 2,
                    "train.checkpoint_dir": str(root / "checkpoints"),
                },
            )
            prepare(data, params, root / f"prepared-{role}")
            result = train(
                params,
                root / f"prepared-{role}",
                out_dir=root / role,
                metrics_path=root / "metrics" / f"{role}.json",
                epochs_path=root / "metrics" / f"{role}.csv",
                model_name=model,
            )
            versions[role] = result.model_version
        legacy = root / "legacy"
        spec = read_spec(root / "champion")
        old = {k: v for k, v in spec.provenance.items() if k != "data_ranges"}
        bundle = ModelBundle(
            spec.model_copy(update={"provenance": old}), ModelBundle.load(root / "champion").model
        )
        bundle.save(legacy)
        readings = pd.DataFrame(
            {"timestamp": pd.date_range("2026-01-05", periods=20, freq="5s"), "power_w": np.full(20, 180.0)}
        )
        client = MlflowClient()
        run_id = client.create_run(client.get_experiment_by_name("airwatt").experiment_id).info.run_id
        model_uri = tracking.log_bundle_model(run_id, legacy, readings, predict_frame(bundle, readings))
        versions["legacy"] = tracking.register(model_uri, run_id, params.register_)
        yield {"root": root, "data": data, "versions": versions, "params": params}


def by_mae(params: Any) -> RegisterParams:
    """The rule on mean MAE (lower wins): what the fixture's two baselines differ in."""
    return params.register_.model_copy(
        update={
            "metric": "mean.mae_w",
            "higher_is_better": False,
            "min_improvement": 0.0,
            "tie_breaker": "mean.f1",
            "tie_breaker_higher_is_better": True,
        }
    )


def on_devices(data: Path, devices: list[str]) -> promotion.Evaluator:
    def evaluate_model(
        model: str | Path, out: Path, is_candidate: bool, exclude: DataRanges | None
    ) -> EvaluationReport:
        return evaluate(model, data, out, devices=devices, exclude=exclude)

    return evaluate_model


def champion_is(version: str) -> None:
    MlflowClient().set_registered_model_alias(NAME, "champion", version)


def champion_now() -> str:
    return str(MlflowClient().get_model_version_by_alias(NAME, "champion").version)


@pytest.mark.slow
def test_promotion_compares_only_on_data_neither_model_trained_or_validated_on(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    data, v = registry["data"], registry["versions"]
    champion_is(v["champion"])
    # Without the gate the champion wins: it is perfect on device a, which it trained on.
    full = {
        role: evaluate(f"models:/{NAME}/{v[role]}", data, tmp_path / f"{role}.json", devices=["a", "b"])
        for role in ("champion", "candidate")
    }
    assert full["champion"].mean.mae_w < full["candidate"].mean.mae_w
    assert full["champion"].overlap.devices.keys() == {"a"}

    promo = promotion.promote(
        f"models:/{NAME}/{v['candidate']}",
        on_devices(data, ["a", "b"]),
        by_mae(registry["params"]),
        report_path=tmp_path / "eval.json",
        split_tag="gate",
    )
    assert promo.promoted and champion_now() == v["candidate"], promo.reason
    assert promo.compared_on is not None and promo.compared_on.devices == ["b"]
    assert promo.candidate_value == pytest.approx(100 / 3) and promo.champion_value == pytest.approx(200 / 3)
    assert "on 1 device(s), 2 h disjoint from both models' training and validation" in promo.reason
    assert promo.as_json().compared_devices == ["b"] and promo.candidate_overlaps_training is False
    # The candidate's own report is still the whole selection.
    assert json.loads((tmp_path / "eval.json").read_text())["data"]["devices"] == ["a", "b"]


@pytest.mark.slow
def test_no_disjoint_data_keeps_the_champion_and_says_so(registry: dict[str, Any], tmp_path: Path) -> None:
    """Every evaluated reading was seen by the candidate or the champion: no comparison, alias unchanged;
    through the CLI, promotion.json records why."""
    data, v = registry["data"], registry["versions"]
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": [], "val": [], "test": ["a", "c", "v"]}))
    decision = tmp_path / "promotion.json"
    champion_is(v["champion"])
    args = [
        "promote",
        "--data",
        str(data),
        "--candidate",
        f"models:/{NAME}/{v['candidate']}",
        "--split-file",
        str(split_file),
        "--split",
        "test",
        "--out",
        str(tmp_path / "eval.json"),
        "--decision",
        str(decision),
        "--params",
        str(REPO / "params.yaml"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert champion_now() == v["champion"]
    promo = json.loads(decision.read_text())
    assert promo["promoted"] is False and promo["champion_version"] == int(v["champion"])
    assert promo["reason"] == (
        "no evaluation data disjoint from both models' training and validation: the champion stays"
    )
    assert promo["compared_devices"] is None and promo["champion_metric"] is None
    assert promo["candidate_overlaps_training"] is True  # it trained on c and validated on v


@pytest.mark.slow
def test_unknown_provenance_never_helps_a_model_to_the_champion_alias(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    """An old candidate (no data ranges) could be scored on its own training data: it is not compared. An old
    champion is compared on data disjoint from the candidate's only: here it keeps its advantage on device a
    and stays, which is the safe side."""
    data, v = registry["data"], registry["versions"]
    cfg = by_mae(registry["params"])
    champion_is(v["candidate"])
    old = promotion.promote(
        f"models:/{NAME}/{v['legacy']}",
        on_devices(data, ["b"]),
        cfg,
        report_path=tmp_path / "e1.json",
        split_tag="gate",
    )
    assert not old.promoted and champion_now() == v["candidate"]
    assert "candidate's provenance does not record the data it trained and validated on" in old.reason

    champion_is(v["legacy"])
    new = promotion.promote(
        f"models:/{NAME}/{v['candidate']}",
        on_devices(data, ["a", "b"]),
        cfg,
        report_path=tmp_path / "e2.json",
        split_tag="gate",
    )
    assert not new.promoted and champion_now() == v["legacy"]
    assert new.compared_on is not None and new.compared_on.devices == ["a", "b"]
    assert "disjoint from the candidate's (the champion's are unknown)" in new.reason
