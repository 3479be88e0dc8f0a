"""`airwatt evaluate`: known models on small square-wave datasets give the metrics worked out by hand.

The square-wave device (conftest.square_wave_device): 80 W base load, a fridge at 100 W for the first 20 min
of every hour, a kettle at 2200 W for 3 min (36 readings at 5 s) from 07:00 of the first day.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, square_wave_device
from typer.testing import CliRunner

from airwatt.appliances import APPLIANCES
from airwatt.cli import app, run
from airwatt.dataset import DatasetWriter, DeviceInfo
from airwatt.errors import DataError
from airwatt.evaluate import evaluate, evaluate_bundle
from airwatt.labels import derive_labels
from airwatt.metrics import METRIC_KEYS
from airwatt.models import GapPolicy, ModelBundle, ModelOutput, ModelSpec, NormStats, OnOffSpec, build_model
from airwatt.models.decision import DecisionSpec, decision_spec
from airwatt.plots import plot_disaggregation
from airwatt.results import EvaluationReport, Metrics

APPS = ["fridge", "kettle"]
PER_DAY = 24 * 3600 // 5  # readings per day at 5 s
KETTLE_ON = 180 // 5  # 36 readings
MAX_FILL_S = 30.0


def spec_for(arch: str, appliances: list[str] = APPS) -> ModelSpec:
    return ModelSpec(
        arch=arch,
        appliances=appliances,
        window_length=1,
        target="midpoint",
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=100.0,
            aggregate_std_w=50.0,
            power_mean_w=dict.fromkeys(appliances, 10.0),
            power_std_w=dict.fromkeys(appliances, 100.0),
        ),
        on_off={a: OnOffSpec.of(APPLIANCES[a]) for a in appliances},
        gap=GapPolicy(max_fill_s=MAX_FILL_S, max_invalid_fraction=0.1),
    )


def save_real_bundle(path: Path, arch: str = "always_off", appliances: list[str] = APPS) -> Path:
    """A real bundle on disk (model.json + safetensors) of a no-skill baseline from the model registry."""
    spec = spec_for(arch, appliances)
    return ModelBundle(spec, build_model(spec)).save(path)


@dataclass(frozen=True)
class Prediction:
    power_w: np.ndarray
    prob_on: np.ndarray
    on: np.ndarray
    predicted: np.ndarray


class Oracle:
    """A stand-in that decodes the square-wave aggregate exactly: the perfect model for these datasets.

    The first ``unpredicted`` readings get no prediction (as at the edge of a window) and garbage values,
    which must not count.
    """

    def __init__(self, unpredicted: int = 0) -> None:
        self.spec = spec_for("oracle")
        self.unpredicted = unpredicted

    @property
    def appliances(self) -> list[str]:
        return list(self.spec.appliances)

    def predict_series(self, aggregate_w: np.ndarray, valid: np.ndarray | None = None) -> Prediction:
        rest = np.nan_to_num(aggregate_w) - 80.0
        kettle = np.where(rest >= 2000, 2200.0, 0.0)
        fridge = np.where(rest - kettle >= 50, 100.0, 0.0)
        power = np.stack([fridge, kettle], axis=1)
        predicted = np.ones(len(aggregate_w), bool) if valid is None else valid.copy()
        predicted[: self.unpredicted] = False
        power[: self.unpredicted] = 999.0
        on = power > 0
        on[: self.unpredicted] = True
        return Prediction(power, on.astype(np.float32), on, predicted)


DeviceTables = tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]


def write_dataset(path: Path, devices: dict[str, DeviceTables], appliances: list[str] = APPS) -> Path:
    """A dataset of the given (readings, ground truth or None, labels or None) per device."""
    with DatasetWriter(path, name=path.name, appliances=appliances, interval_s=5) as w:
        for dev, (readings, gt, labels) in devices.items():
            info = DeviceInfo(device_id=dev, appliances=appliances, rated_max_w=10000)
            w.add_device(info, readings, ground_truth=gt, labels=labels)
    return path


def square(
    dev: str, hours: float = 8, kettle: bool = True, start: str = "2026-01-05T00:00:00Z"
) -> DeviceTables:
    readings, gt = square_wave_device(dev, start=start, hours=hours)
    if not kettle:
        readings["power_w"] -= gt["kettle"]
        gt["kettle"] = np.nan  # not sub-metered here
    return readings, gt, derive_labels(gt, APPS, APPLIANCES, 5)


def metrics(report: EvaluationReport, app: str, device: str | None = None) -> Metrics:
    return report.appliances[app] if device is None else report.devices[device][app]


# ------------------------------------------------------------------------------------------ known models
def test_perfect_model_scores_perfectly(make_dataset: Callable[..., Path]) -> None:
    data = make_dataset(devices=2, hours=8)
    report = evaluate_bundle(Oracle(), data)
    assert report.data.devices == ["d-0000", "d-0001"]
    for block in (report.appliances, *report.devices.values()):
        for name in APPS:
            m = block[name]
            assert m.mae_w == 0 and m.sae == 0 and m.nde == 0 and m.eac == 1
            assert m.f1 == 1 and m.precision == 1 and m.recall == 1
    assert report.mean.mae_w == 0 and report.mean.f1 == 1


def test_zero_model_from_a_real_bundle_scores_the_mean_truth(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data = make_dataset(devices=2, hours=8)
    bundle = save_real_bundle(tmp_path / "always_off")
    report = evaluate(bundle, data, tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text()) == report.model_dump(mode="json")
    fridge, kettle = metrics(report, "fridge"), metrics(report, "kettle")
    # MAE of predicting 0 W is the mean truth: the fridge is on 20 of every 60 min at 100 W ...
    assert fridge.mae_w == pytest.approx(100 * 20 / 60)
    # ... the kettle 36 readings of the 8 h (5760 readings) at 2200 W.
    assert kettle.mae_w == pytest.approx(2200 * KETTLE_ON / (8 * 720))
    for m in (fridge, kettle):
        assert m.recall == 0 and m.f1 == 0
        assert m.precision is None  # never predicted on: undefined, not 0 or 1
        assert m.sae == 1 and m.nde == 1  # |0 - Σy| / Σy and Σy² / Σy²
        assert m.eac == pytest.approx(1 - 1 / 2)  # 1 - Σy / (2 Σy)
    assert report.mean.mae_w == pytest.approx((100 * 20 / 60 + 2200 * KETTLE_ON / (8 * 720)) / 2)
    assert report.model.arch == "always_off" and report.model.uri == str(bundle)


def test_unpredicted_and_invalid_readings_do_not_count(tmp_path: Path) -> None:
    readings, gt, labels = square("d-0000")
    gt.loc[720:1439, "fridge"] = np.nan  # the second hour has no fridge truth (longer than max_fill_s)
    data = write_dataset(tmp_path / "gappy", {"d-0000": (readings, gt, labels)})
    report = evaluate_bundle(Oracle(unpredicted=100), data)
    assert metrics(report, "fridge").mae_w == 0 and metrics(report, "fridge").f1 == 1
    assert metrics(report, "kettle").mae_w == 0
    counted = report.data.readings
    assert counted["fridge"].model_dump() == {"power": 8 * 720 - 100 - 720, "onoff": 8 * 720 - 100 - 720}
    assert counted["kettle"].model_dump() == {"power": 8 * 720 - 100, "onoff": 8 * 720 - 100}


def test_appliances_block_pools_readings_of_all_devices(tmp_path: Path) -> None:
    data = write_dataset(
        tmp_path / "two", {"d-0000": square("d-0000", hours=8), "d-0001": square("d-0001", hours=24)}
    )
    report = evaluate_bundle(Oracle(unpredicted=0), data)  # sanity: perfect on both
    assert metrics(report, "kettle").mae_w == 0
    bundle = ModelBundle.load(save_real_bundle(tmp_path / "zero"))
    report = evaluate_bundle(bundle, data)
    per_device = [metrics(report, "kettle", d).mae_w for d in ("d-0000", "d-0001")]
    assert per_device == pytest.approx([2200 * 36 / (8 * 720), 2200 * 36 / (24 * 720)])
    # pooled: both kettle runs over all 8 h + 24 h of readings, not the mean of the two devices
    assert metrics(report, "kettle").mae_w == pytest.approx(2 * 2200 * 36 / (32 * 720))


def test_appliances_a_device_lacks_are_skipped_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    annotated_readings, _ = square_wave_device("d-0002", hours=8)
    fridge_runs = derive_labels(square_wave_device("d-0002", hours=8)[1], ["fridge"], APPLIANCES, 5)
    annotator = fridge_runs.assign(source="annotator")
    # A model's own labels are never truth: this kettle run must not make the kettle count at d-0002.
    model_labels = annotator.head(1).assign(appliance="kettle", source="model")
    data = write_dataset(
        tmp_path / "mixed",
        {
            "d-0000": square("d-0000"),
            "d-0001": square("d-0001", kettle=False),
            "d-0002": (annotated_readings, None, pd.concat([annotator, model_labels])),
            "d-0003": (annotated_readings, None, None),  # no truth at all
        },
    )
    with caplog.at_level("INFO", logger="airwatt.evaluate"):
        report = evaluate_bundle(Oracle(), data)
    assert set(report.devices["d-0001"]) == {"fridge"}
    assert "d-0001: no ground truth or labels for kettle" in caplog.text
    # Annotator labels only: on/off metrics, no power metrics.
    d2 = report.devices["d-0002"]
    assert set(d2) == {"fridge"}
    assert d2["fridge"].f1 == 1 and d2["fridge"].mae_w is None and d2["fridge"].sae is None
    # The kettle is evaluated on d-0000 only; the fridge's power on d-0000 and d-0001, its state on all three.
    assert report.data.readings["kettle"].power == 8 * 720
    assert report.data.readings["fridge"].model_dump() == {"power": 2 * 8 * 720, "onoff": 3 * 8 * 720}
    assert report.data.skipped_devices == {
        "d-0003": "no ground truth or labels for any of the model's appliances"
    }
    with pytest.raises(DataError, match="none of the selected devices \\['d-0003'\\] has truth"):
        evaluate_bundle(Oracle(), data, devices=["d-0003"])


def test_split_file_selects_the_held_out_devices(make_dataset: Callable[..., Path], tmp_path: Path) -> None:
    data = make_dataset(devices=3, hours=8)
    split_file = tmp_path / "split.json"
    split_file.write_text(
        json.dumps({"seed": 7, "train": ["d-0000", "d-0002"], "val": [], "test": ["d-0001"]})
    )
    report = evaluate_bundle(Oracle(), data, split_file=split_file, split="test")
    assert report.data.devices == ["d-0001"]
    assert list(report.devices) == ["d-0001"]
    both = evaluate_bundle(
        Oracle(),
        data,
        devices=["d-0000", "d-0002"],
        split_file=split_file,
        split="train",
    )
    assert both.data.devices == ["d-0000", "d-0002"]


def test_time_split_evaluates_only_the_test_period(make_dataset: Callable[..., Path], tmp_path: Path) -> None:
    """With prepare.split_by time (one-site data), the test split is the newest share of each device's span:
    evaluation counts those readings only. A real-time model gets the readings before the period as context
    (the service would have them), so the period's first readings are answered too."""
    from airwatt.config import load_params
    from airwatt.prepare import prepare

    data = make_dataset(devices=1, hours=8)
    params = load_params(
        REPO / "params.yaml",
        overrides={"prepare.split_by": "time", "prepare.val_fraction": 0.25, "prepare.test_fraction": 0.25},
    )
    prepare(data, params, tmp_path / "prep")
    split_file = tmp_path / "prep" / "split.json"
    test = evaluate_bundle(Oracle(), data, split_file=split_file, split="test")
    whole = evaluate_bundle(Oracle(), data)
    assert whole.data.readings["fridge"].power == 8 * 720
    assert test.data.readings["fridge"].power == 2 * 720  # 06:00-08:00 only
    assert test.data.selection.time_ranges["d-0000"][0].startswith("2026-01-05T06:00:00")
    assert test.appliances["kettle"].f1 == 1.0  # the 07:00 kettle run is in the test period
    served = evaluate_bundle(newest_reading_bundle(None), data, split_file=split_file, split="test")
    assert served.data.readings["fridge"].onoff == 2 * 720
    assert served.data.answered["fridge"] == 1.0  # its first readings too: history was loaded
    assert served.appliances["fridge"].f1 == 1.0  # the plain per-reading rule reads 100 W exactly


# ----------------------------------------------------------------------------------------------- the CLI
def test_cli_writes_the_report_with_the_key_contract(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    data = make_dataset(devices=2, hours=8)
    bundle = save_real_bundle(tmp_path / "mean", arch="mean")
    out = tmp_path / "metrics" / "eval.json"
    args = ["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(out), "--devices", "d-0001"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report) == ["model", "data", "rule", "appliances", "mean", "switches", "devices", "overlap"]
    assert report["rule"] == "offline"  # the mean baseline is not a real-time model
    assert set(report["appliances"]) == set(APPS)
    for block in (*report["appliances"].values(), report["mean"], *report["devices"]["d-0001"].values()):
        assert list(block) == list(METRIC_KEYS)
    assert list(report["devices"]) == ["d-0001"]
    # The mean baseline predicts its training mean (10 W here) at every reading.
    assert report["appliances"]["fridge"]["sae"] == pytest.approx(abs(10 - 100 / 3) / (100 / 3))
    assert not list(out.parent.glob(".*"))  # written atomically: no temporary file left behind


def test_cli_writes_plots_of_the_most_active_day(tmp_path: Path) -> None:
    readings, gt = square_wave_device("d-0000", hours=48)
    day2 = np.arange(len(gt)) // PER_DAY == 1
    kettle = np.zeros(len(gt))  # no kettle on day 1; two runs on day 2
    kettle[PER_DAY + 8 * 720 : PER_DAY + 8 * 720 + 36] = 2200
    kettle[PER_DAY + 18 * 720 : PER_DAY + 18 * 720 + 36] = 2200
    readings["power_w"] += kettle - gt["kettle"]
    gt["kettle"] = kettle
    assert day2.sum() == PER_DAY
    data = write_dataset(
        tmp_path / "two-days", {"d-0000": (readings, gt, derive_labels(gt, APPS, APPLIANCES, 5))}
    )
    bundle = save_real_bundle(tmp_path / "zero")
    plots, out = tmp_path / "plots", tmp_path / "eval.json"
    args = ["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(out), "--plots", str(plots)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in plots.iterdir()) == ["fridge.csv", "fridge.png", "kettle.csv", "kettle.png"]
    img = matplotlib.image.imread(plots / "kettle.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600
    report = json.loads(out.read_text())
    assert report["data"]["plotted_days"]["kettle"] == {"device": "d-0000", "day": "2026-01-06"}
    frame = pd.read_csv(plots / "kettle.csv")
    assert list(frame.columns) == ["hour", "aggregate_w", "truth_w", "pred_w", "prob_on", "truth_on"]
    # one row per minute of the day; each 3-minute kettle run starts on a minute boundary
    assert (
        len(frame) == 24 * 60
        and frame["hour"].iloc[0] == 0
        and frame["hour"].iloc[-1] == pytest.approx(23 + 59 / 60)
    )
    assert frame["truth_on"].sum() == 2 * 3 and frame["truth_w"].max() == 2200 and frame["pred_w"].max() == 0


def _run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """The real entry point in-process: exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["airwatt", *args])
    with pytest.raises(SystemExit) as e:
        run()
    return int(e.value.code or 0), capsys.readouterr().err


@pytest.fixture
def eval_inputs(make_dataset: Callable[..., Path], tmp_path: Path) -> dict[str, Path]:
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["d-0000"], "val": [], "test": ["d-0001"]}))
    return {
        "data": make_dataset(devices=2, hours=2),
        "bundle": save_real_bundle(tmp_path / "zero"),
        "microwave": save_real_bundle(tmp_path / "microwave", appliances=["microwave"]),
        "split": split,
        "out": tmp_path / "eval.json",
    }


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_dir", "no model bundle directory there"),
        ("unknown_appliances", "has none of the model's appliances ['microwave']"),
        ("unknown_devices", "devices ['nope'] are not in dataset 'tiny'"),
        ("empty_selection", "no devices to evaluate: --devices and split 'val'"),
        ("unknown_split", "no split 'holdout'; it has train, val, test"),
        ("split_without_file", "--split-file and --split go together"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    case: str,
    expected: str,
    eval_inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    i = eval_inputs
    model, extra = str(i["bundle"]), []
    if case == "missing_dir":
        model = str(tmp_path / "no-such-bundle")
    elif case == "unknown_appliances":
        model = str(i["microwave"])
    elif case == "unknown_devices":
        extra = ["--devices", "d-0000", "--devices", "nope"]
    elif case == "empty_selection":
        extra = ["--devices", "d-0000", "--split-file", str(i["split"]), "--split", "val"]
    elif case == "unknown_split":
        extra = ["--split-file", str(i["split"]), "--split", "holdout"]
    elif case == "split_without_file":
        extra = ["--split", "test"]
    args = ["evaluate", "--model", model, "--data", str(i["data"]), "--out", str(i["out"]), *extra]
    code, err = _run_cli(args, monkeypatch, capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    assert not i["out"].exists()


@pytest.mark.slow  # a fresh interpreter imports torch and mlflow and creates a tracking store
def test_unresolvable_model_uri_fails_cleanly_in_a_subprocess(
    make_dataset: Callable[..., Path], tmp_path: Path
) -> None:
    uri = "models:/airwatt-disaggregator@champion"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    data, out = make_dataset(hours=1), tmp_path / "eval.json"
    cmd = [
        sys.executable,
        "-m",
        "airwatt.cli",
        "evaluate",
        "--model",
        uri,
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert uri in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------- the plot
def test_plot_disaggregation_renders_a_png_without_pyplot_state() -> None:
    import matplotlib.pyplot as plt

    ts = pd.date_range("2026-01-05", periods=720, freq="5s", tz="Europe/Berlin")
    truth = np.where(np.arange(720) % 240 < 80, 100.0, 0.0)
    before = plt.get_fignums()
    fig = plot_disaggregation(
        ts, truth + 80, truth, truth * 0.9, "fridge", prob_on=truth / 100, truth_on=truth > 0
    )
    assert plt.get_fignums() == before  # no figure registered with pyplot
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["aggregate", "fridge truth", "fridge predicted"]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    power_only = plot_disaggregation(ts, truth + 80, None, truth, "fridge")
    assert len(power_only.axes) == 1 and len(power_only.axes[0].get_lines()) == 2


# ------------------------------------------------------------------------------------ served (real-time)
class NewestReadingModel(torch.nn.Module):
    """A real-time stand-in: the fridge's power and a steep on-logit from the newest reading of its window
    (normalised aggregate 0 off, 1 fridge on)."""

    def __init__(self, window_length: int) -> None:
        super().__init__()
        self.n_appliances, self.window_length, self.target = 1, window_length, "last"

    def forward(self, x: torch.Tensor) -> ModelOutput:
        v = x[:, -1:]
        return ModelOutput(v, (v - 0.5) * 100)


def newest_reading_bundle(decision: DecisionSpec | None) -> ModelBundle:
    """NewestReadingModel as a real-time bundle (window 9) with ``decision`` (None: prob_on >= 0.5)."""
    spec = ModelSpec(
        arch="causal",
        appliances=["fridge"],
        window_length=9,
        target="last",
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=80.0,
            aggregate_std_w=100.0,
            power_mean_w={"fridge": 0.0},
            power_std_w={"fridge": 100.0},
        ),
        on_off={"fridge": OnOffSpec.of(APPLIANCES["fridge"])},
        gap=GapPolicy(max_fill_s=MAX_FILL_S, max_invalid_fraction=0.1),
        decision=decision,
    )
    return ModelBundle(spec, NewestReadingModel(9))


def test_a_real_time_model_is_scored_on_what_the_service_answers(tmp_path: Path) -> None:
    """8 h of the square wave: the fridge on for the first 240 readings of every 720. The causal rule
    confirms on after 3 readings (15 s) and off after 2 (10 s); the window (9) has no room for missing
    readings, so the first 8 readings (padding before the series) are unanswered and count as off."""
    rule = {"on_prob": 0.6, "off_prob": 0.4, "confirm_on_s": 15, "confirm_off_s": 10}
    bundle = newest_reading_bundle(decision_spec(60, {"fridge": rule}))
    data = write_dataset(tmp_path / "one", {"d-0000": square("d-0000", hours=8)})
    report = evaluate_bundle(bundle, data)
    assert report.rule == "served"
    fridge = report.appliances["fridge"]
    # FN: the 8 unanswered readings (readings 8-9 hold no confirmation yet, so the band's middle decides:
    # on) and 2 of each of the 7 later runs; FP: 1 per switch-off (8).
    tp, fp, fn = 8 * 240 - 22, 8, 22
    assert fridge.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert fridge.recall == pytest.approx(tp / (tp + fn))
    assert fridge.precision == pytest.approx(tp / (tp + fp))
    # Watts are the served state's: 0 W on the 22 missed readings (truth 100 W); the kettle's 2200 W from
    # 07:00 (a fridge switch-on too) make the stand-in read 300 W, the fridge's maximum, on the 34 readings
    # after the 2 missed.
    assert fridge.mae_w == pytest.approx((22 * 100 + 34 * 200) / (8 * 720))
    assert report.data.answered["fridge"] == pytest.approx((8 * 720 - 8) / (8 * 720))
    # The same outputs under the offline rule (the future-reading durations): every reading right.
    assert report.offline.appliances["fridge"].f1 == 1.0
    switches = report.switches["fridge"]
    assert switches.switch_ons == 7  # the first run began before the data: not an observed switch-on
    assert switches.detected == 1.0
    assert switches.delay_median_s == switches.delay_p90_s == 10.0
    assert switches.false_switches_per_day == 0.0
