"""Few-label adaptation (`airwatt train --init-from`): a model registered in a real MLflow tracking server,
fine-tuned on another site's labelled days, does better there; the heads-only mode leaves the trunk alone;
a prepared directory that does not match the model is a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from airwatt.appliances import APPLIANCES
from airwatt.config import Params, load_params
from airwatt.data_ranges import seen_by
from airwatt.dataset import DatasetWriter, DeviceInfo
from airwatt.errors import ConfigError
from airwatt.evaluate import evaluate_bundle
from airwatt.labels import derive_labels
from airwatt.models import ModelBundle
from airwatt.prepare import prepare
from airwatt.training.train import train

REPO = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-01-05T00:00:00Z")
APPS = ["fridge", "kettle"]

pytestmark = pytest.mark.slow  # two small trainings and a fine-tuning (~30 s on 2 cores)


def site(root: Path, fridge_w: float, base_w: float, devices: int = 3, hours: float = 12) -> Path:
    """Devices whose fridge draws ``fridge_w`` for 20 min of every hour, on a noisy base load."""
    n = int(hours * 720)
    t_s = np.arange(n) * 5
    ts = START + pd.to_timedelta(t_s, unit="s")
    with DatasetWriter(root, name=root.name, appliances=APPS, interval_s=5) as w:
        for i in range(devices):
            rng = np.random.default_rng(i)
            fridge = np.where(((t_s + 600 * i) % 3600) < 1200, fridge_w, 0.0)
            kettle = np.where((t_s % 14400) < 120, 2000.0, 0.0)
            gt = pd.DataFrame({"timestamp": ts, "fridge": fridge, "kettle": kettle})
            power = base_w + fridge + kettle + rng.normal(0, 5, n)
            w.add_device(
                DeviceInfo(device_id=f"{root.name}-{i}", appliances=APPS),
                pd.DataFrame({"timestamp": ts, "power_w": power}),
                ground_truth=gt,
                labels=derive_labels(gt, APPS, APPLIANCES, 5),
            )
    return root


def params(tmp: Path, **overrides: Any) -> Params:
    return load_params(
        REPO / "params.yaml",
        overrides={
            "train.model": "causal",
            "train.batch_size": 32,
            "train.limit_train_batches": 15,
            "train.limit_val_batches": 4,
            "train.max_epochs": 3,
            "train.num_workers": 0,
            "train.checkpoint_dir": str(tmp / "ckpt"),
            **overrides,
        },
    )


def run(p: Params, prepared: Path, out: Path, **kw: Any):
    return train(
        p, prepared, out_dir=out / "model", metrics_path=out / "train.json", epochs_path=out / "e.csv", **kw
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> tuple[str, Path]:
    """A base model trained on site A (fridge 100 W) and registered on the tracking server."""
    tmp = tmp_path_factory.mktemp("base")
    a = site(tmp / "a", fridge_w=100.0, base_w=80.0)
    p = params(tmp, **{"prepare.val_devices": ["a-2"], "prepare.test_devices": []})
    prepare(a, p, tmp / "pa")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        result = run(p, tmp / "pa", tmp / "out", register=True)
    finally:
        mp.undo()
    assert result.model_version is not None
    return f"models:/{p.register_.model_name}/{result.model_version}", tmp


@pytest.fixture(scope="module")
def site_b(registered: tuple[str, Path]) -> tuple[Path, Path]:
    """Site B (fridge 300 W on a 150 W base): b-0 labelled days (train), b-1 (validation), b-2 (test)."""
    _, tmp = registered
    b = site(tmp / "b", fridge_w=300.0, base_w=150.0)
    p = params(
        tmp, **{"prepare.val_devices": ["b-1"], "prepare.test_devices": ["b-2"], "prepare.appliances": APPS}
    )
    prepare(b, p, tmp / "pb")
    return b, tmp / "pb"


@pytest.fixture
def tracked(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tests' tracking server as this test's MLFLOW_TRACKING_URI (models:/ URIs resolve there)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


def fridge_mae(bundle: ModelBundle, data: Path) -> float:
    return float(evaluate_bundle(bundle, data, devices=["b-2"]).appliances["fridge"].mae_w)


def test_fine_tuning_a_registered_model_on_a_sites_days_improves_it_there(
    registered: tuple[str, Path], site_b: tuple[Path, Path], tracked: str, tmp_path: Path
) -> None:
    uri, _ = registered
    data, prepared = site_b
    before = fridge_mae(ModelBundle.load(_download(uri, tmp_path)), data)
    p = params(tmp_path, **{"train.init_from": uri, "train.lr": 0.003})
    result = run(p, prepared, tmp_path / "ft", use_mlflow=False)
    tuned = ModelBundle.load(result.bundle_dir)
    after = fridge_mae(tuned, data)
    print(f"fridge MAE on the new site: {before:.1f} W before, {after:.1f} W after fine-tuning")
    assert after < 0.7 * before, (before, after)  # the 300 W fridge is learnt from the site's days
    assert tuned.spec.provenance["init_from"] == uri
    seen = seen_by(tuned.spec.provenance)  # the site's labelled days and all the initial model saw
    assert seen is not None and {"a-2", "b-0", "b-1"} <= set(seen.devices) and "b-2" not in seen.devices
    assert tuned.spec.norm == ModelBundle.load(_download(uri, tmp_path)).spec.norm  # the model's own scaling
    assert tuned.spec.decision is not None  # the decision rule is tuned again, on the site's validation day


def _download(uri: str, tmp: Path) -> Path:
    from airwatt.model_uri import download_bundle

    out = tmp / "initial"
    return out if out.is_dir() else download_bundle(uri, out)


def test_heads_only_fine_tuning_leaves_the_trunk_unchanged(
    registered: tuple[str, Path], site_b: tuple[Path, Path], tracked: str, tmp_path: Path
) -> None:
    uri, _ = registered
    _, prepared = site_b
    initial = ModelBundle.load(_download(uri, tmp_path))
    p = params(tmp_path, **{"train.init_from": uri, "train.finetune": "heads", "train.max_epochs": 1})
    result = run(p, prepared, tmp_path / "ft", use_mlflow=False)
    before, after = initial.model.state_dict(), ModelBundle.load(result.bundle_dir).model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("head" in k for k in changed), sorted(changed)


def test_fine_tuning_data_without_the_models_appliances_is_an_error(
    registered: tuple[str, Path], site_b: tuple[Path, Path], tracked: str, tmp_path: Path
) -> None:
    uri, _ = registered
    data, _ = site_b
    other = tmp_path / "pk"
    split = {"prepare.val_devices": ["b-1"], "prepare.test_devices": ["b-2"]}
    prepare(data, params(tmp_path, **split, **{"prepare.appliances": ["kettle"]}), other)
    fix = r"prepare the site with prepare.appliances = \['fridge', 'kettle'\]"
    with pytest.raises(ConfigError, match=fix):
        run(params(tmp_path, **{"train.init_from": uri}), other, tmp_path / "x", use_mlflow=False)
    assert json.loads((other / "train" / "index.json").read_text())["appliances"] == ["kettle"]
