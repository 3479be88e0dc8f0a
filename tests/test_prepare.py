"""The prepare stage: device split, grid with bounded gap filling, train-only statistics, lazy windows."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from airwatt.appliances import APPLIANCES
from airwatt.config import Params, load_params
from airwatt.dataset import Dataset, DatasetWriter, DeviceInfo
from airwatt.errors import ConfigError, DataError
from airwatt.labels import derive_labels
from airwatt.prepare import prepare
from airwatt.prepare.grid import grid_device
from airwatt.prepare.split import split_devices, split_sizes
from airwatt.prepare.windows import WindowDataset

REPO = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-01-05T00:00:00Z")
APPS = ["fridge", "kettle"]


def params(**overrides: object) -> Params:
    return load_params(REPO / "params.yaml", overrides=dict(overrides))


def device_frames(i: int, hours: float = 6, gap: tuple[int, int] | None = None, base_w: float | None = None):
    """Readings and ground truth of device i: a distinct base load and ramp (so windows are tell-tale),
    a fridge cycling 20 min per hour; ``gap`` = (start min, end min) of readings left out."""
    n = int(hours * 720)
    t_s = np.arange(n) * 5
    ts = START + pd.to_timedelta(t_s, unit="s")
    fridge = np.where((t_s % 3600) < 1200, 100.0, 0.0)
    base = (100.0 * (i + 1) if base_w is None else base_w) + (np.arange(n) % 50)
    gt = pd.DataFrame({"timestamp": ts, "fridge": fridge, "kettle": 0.0})
    readings = pd.DataFrame({"timestamp": ts, "power_w": base + fridge})
    if gap is not None:
        keep = (t_s < gap[0] * 60) | (t_s >= gap[1] * 60)
        readings, gt = readings[keep], gt[keep]
    return readings, gt


def write_dataset(
    root: Path, frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]], site_types: dict[str, str] | None = None
) -> Path:
    with DatasetWriter(root, name="t", appliances=APPS, interval_s=5) as w:
        for dev, (r, gt) in frames.items():
            info = DeviceInfo(device_id=dev, appliances=APPS, site_type=(site_types or {}).get(dev, "home"))
            w.add_device(info, r, ground_truth=gt, labels=derive_labels(gt, APPS, APPLIANCES, 5))
    return root


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """6 devices, 6 h each; d2 has a 12 min gap from 02:00; prepared with the default params."""
    frames = {f"d{i}": device_frames(i, gap=(120, 132) if i == 2 else None) for i in range(6)}
    data = write_dataset(tmp_path / "data", frames)
    prepare(data, params(), tmp_path / "prepared")
    return tmp_path / "prepared"


# ---------------------------------------------------------------------------------------------- split
def _infos(n_home: int, n_cafe: int) -> list[DeviceInfo]:
    homes = [DeviceInfo(device_id=f"h{i:02d}", site_type="home") for i in range(n_home)]
    return homes + [DeviceInfo(device_id=f"c{i:02d}", site_type="cafe") for i in range(n_cafe)]


def test_split_is_disjoint_deterministic_and_stratified() -> None:
    devices = _infos(12, 8)
    split = split_devices(devices, seed=7, val_fraction=0.15, test_fraction=0.15)
    sets = [set(split[s]) for s in ("train", "val", "test")]
    assert sum(len(s) for s in sets) == 20 and set().union(*sets) == {d.device_id for d in devices}
    assert (len(split["val"]), len(split["test"])) == (3, 3)
    for s in ("val", "test"):  # both site types on each side
        assert {d[0] for d in split[s]} == {"h", "c"}
    assert split == split_devices(list(reversed(devices)), seed=7, val_fraction=0.15, test_fraction=0.15)
    assert split != split_devices(devices, seed=8, val_fraction=0.15, test_fraction=0.15)


@pytest.mark.parametrize(
    ("n", "expected"), [(1, (0, 0)), (2, (0, 0)), (3, (1, 1)), (4, (1, 1)), (20, (3, 3))]
)
def test_split_sizes_keep_one_device_each_from_three(n: int, expected: tuple[int, int]) -> None:
    assert split_sizes(n, 0.15, 0.15) == expected
    n_val, n_test = split_sizes(n, 0.5, 0.5)
    assert n - n_val - n_test >= 1  # train always keeps a device


def test_explicit_device_lists_replace_the_seeded_split(tmp_path: Path) -> None:
    frames = {f"d{i}": device_frames(i, hours=1) for i in range(4)}
    data = write_dataset(tmp_path / "data", frames)
    prepare(data, params(**{"prepare.test_devices": ["d2"], "prepare.val_devices": ["d0"]}), tmp_path / "p")
    split = json.loads((tmp_path / "p" / "split.json").read_text())
    assert (split["train"], split["val"], split["test"]) == (["d1", "d3"], ["d0"], ["d2"])
    assert split["rule"].startswith("explicit")
    with pytest.raises(ConfigError, match=r"devices \['house9'\] are not in the dataset"):
        prepare(data, params(**{"prepare.test_devices": ["house9"]}), tmp_path / "p2")
    assert not (tmp_path / "p2").exists()


def test_prepare_writes_the_same_split_on_rerun(prepared: Path, tmp_path: Path) -> None:
    split = json.loads((prepared / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (4, 1, 1)
    prepare(tmp_path / "data", params(), tmp_path / "again")
    assert json.loads((tmp_path / "again" / "split.json").read_text()) == split
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["devices"] == {"train": 4, "val": 1, "test": 1}
    assert sum(summary["readings"].values()) == len(Dataset(tmp_path / "data").readings())


# ---------------------------------------------------------------------------------------------- statistics
def test_norm_stats_are_fitted_on_train_devices_only(prepared: Path, tmp_path: Path) -> None:
    split = json.loads((prepared / "split.json").read_text())
    stats = json.loads((prepared / "norm_stats.json").read_text())
    data = Dataset(tmp_path / "data")
    train_power = data.readings(devices=split["train"])["power_w"].to_numpy(np.float64)
    fridge_w = data.ground_truth(devices=split["train"])["fridge"].to_numpy(np.float64)
    if "d2" in split["train"]:  # the first 30 s (6 slots) of its input gap hold the reading before it
        before = data.readings(devices=["d2"], end=START + pd.Timedelta(minutes=120))["power_w"].iloc[-1]
        train_power = np.concatenate([train_power, np.full(6, before)])
    assert stats["aggregate"]["mean_w"] == pytest.approx(train_power.mean(), rel=1e-6)
    assert stats["aggregate"]["std_w"] == pytest.approx(train_power.std(), rel=1e-5)
    assert stats["appliances"]["fridge"]["mean_w"] == pytest.approx(fridge_w.mean(), rel=1e-6)
    assert stats["appliances"]["fridge"]["max_w"] == 100.0
    assert stats["appliances"]["kettle"]["std_w"] == 1.0  # never on: std 0 is stored as 1

    def prepared_stats_with(device: str, base_w: float, name: str) -> dict:
        frames = {f"d{i}": device_frames(i, gap=(120, 132) if i == 2 else None) for i in range(6)}
        frames[device] = device_frames(int(device[1:]), base_w=base_w)
        write_dataset(tmp_path / f"data-{name}", frames)
        prepare(tmp_path / f"data-{name}", params(), tmp_path / name)
        return json.loads((tmp_path / name / "norm_stats.json").read_text())

    assert prepared_stats_with(split["test"][0], 5000.0, "test-changed") == stats
    assert prepared_stats_with(split["val"][0], 5000.0, "val-changed") == stats
    changed = prepared_stats_with(split["train"][0], 5000.0, "train-changed")
    assert changed["aggregate"]["mean_w"] > stats["aggregate"]["mean_w"] + 100


# ---------------------------------------------------------------------------------------------- grid
def test_grid_fills_short_gaps_and_marks_long_ones_invalid() -> None:
    readings, gt = device_frames(0, hours=1)
    drop = np.r_[10:13, 100:200]  # 3 slots (15 s <= 30 s: filled) and 100 slots (500 s)
    readings = readings.drop(readings.index[drop])
    readings.loc[readings.index[50], "timestamp"] += pd.Timedelta(seconds=2)  # jitter stays in its slot
    g = grid_device(readings, gt, None, APPS, interval_s=5, max_fill_s=30)
    assert len(g) == 720 and g.present == 720 - 103
    assert g.valid[10:13].all() and (g.aggregate_w[10:13] == g.aggregate_w[9]).all()
    # The long gap: its first 30 s (6 slots) are filled, as a service filling reading by reading would
    # (it cannot know yet that the gap will last); the rest is invalid.
    assert g.valid[100:106].all() and (g.aggregate_w[100:106] == g.aggregate_w[99]).all()
    assert not g.valid[106:200].any() and np.isnan(g.aggregate_w[106:200]).all()
    assert not g.power_valid[106:200].any()  # targets need the aggregate too
    assert g.aggregate_w[53] == np.float32(readings["power_w"].iloc[50])  # row 50 is slot 53
    # fridge on/off derived from the ground truth (known in the aggregate's gap too): on the first 20 min
    assert g.status[:240, 0].all() and not g.status[240:, 0].any()
    assert not g.status_valid[106:200, 0].any() and g.status_valid[200:, 0].all()


def test_status_prefers_sub_meter_then_annotator_and_needs_no_ground_truth_for_labels() -> None:
    readings, _ = device_frames(0, hours=1)
    labels = pd.DataFrame(
        {
            "appliance": ["kettle", "kettle"],
            "start": [START + pd.Timedelta(minutes=10), START + pd.Timedelta(minutes=30)],
            "end": [START + pd.Timedelta(minutes=11), START + pd.Timedelta(minutes=31)],
            "source": ["annotator", "model"],
        }
    )
    g = grid_device(readings, None, labels, APPS, interval_s=5, max_fill_s=30)
    assert g.status_sources == {"kettle": "annotator"}
    assert g.status[120:132, 1].all() and g.status[:, 1].sum() == 12  # the model label is not used
    assert g.status_valid[:, 1].all() and not g.status_valid[:, 0].any()  # fridge: nothing known
    assert not g.power_valid.any()


# ---------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("target", ["midpoint", "last"])
def test_windows_equal_direct_slices_of_the_source(prepared: Path, tmp_path: Path, target: str) -> None:
    ds = WindowDataset(prepared, "train", window_length=60, target=target, stride=7, max_invalid_fraction=0)
    stats = ds.stats["aggregate"]
    source = Dataset(tmp_path / "data")
    offset = 30 if target == "midpoint" else 59
    for i in [0, 1, len(ds) // 2, len(ds) - 1]:
        device, target_time = ds.locate(i)
        first = target_time - pd.Timedelta(seconds=5 * offset)
        r = source.readings([device], first, first + pd.Timedelta(seconds=5 * 60))
        assert len(r) == 60  # no invalid slot allowed: every slot holds one reading
        expected = (r["power_w"].to_numpy(np.float64) - stats["mean_w"]) / stats["std_w"]
        sample = ds[i]
        np.testing.assert_allclose(sample.aggregate.numpy(), expected, rtol=1e-5, atol=1e-5)
        gt = source.ground_truth([device], target_time, target_time + pd.Timedelta(seconds=5))
        np.testing.assert_allclose(sample.power_w.numpy(), gt[APPS].to_numpy()[0])
        assert sample.status[0].item() == float(gt["fridge"].iloc[0] >= 50)


def test_windows_never_cross_devices_and_skip_long_gaps(prepared: Path) -> None:
    split = json.loads((prepared / "split.json").read_text())
    where = next(s for s in ("train", "val", "test") if "d2" in split[s])
    ds = WindowDataset(prepared, where, window_length=120, max_invalid_fraction=0.1)
    devices = ds.index["devices"]
    ends = np.array([d["offset"] + d["length"] for d in devices])
    device_of = np.searchsorted(ends, ds.starts, side="right")
    assert (ds.starts + 120 <= ends[device_of]).all()  # the window's last slot is in the start's device
    valid = np.load(prepared / where / "valid.npy")
    invalid = np.array([(~valid[s : s + 120]).sum() for s in ds.starts])
    assert invalid.max() <= 12
    # d2's gap (144 slots from 02:00; its first 6 filled, 138 invalid) is longer than a window: no window
    # starts inside it
    d2 = next(d for d in devices if d["device_id"] == "d2")
    gap = (d2["offset"] + 1440 + 6, d2["offset"] + 1440 + 144)
    assert not ((ds.starts >= gap[0] - 120 + 13) & (ds.starts < gap[1] - 12)).any()
    assert len(ds) == sum(d["length"] - 119 for d in devices) - (138 + 120 - 1 - 2 * 12)


def test_window_dataset_maps_arrays_lazily_and_holds_no_copies(prepared: Path) -> None:
    ds = WindowDataset(prepared, "train", window_length=64)
    assert ds._arrays is None  # nothing opened until a window is read
    ds[0]
    assert all(isinstance(a, np.memmap) for a in ds.arrays.values())
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    assert clone._arrays is None
    held = {k: v for k, v in vars(ds).items() if isinstance(v, np.ndarray)}
    assert set(held) == {"starts", "_device_offsets"}  # window starts only, no window data
    assert ds.starts.shape == (len(ds),) and ds.starts.dtype == np.int64


def test_dataloader_with_two_workers_iterates(prepared: Path) -> None:
    ds = WindowDataset(prepared, "train", window_length=32, stride=50)
    loader = DataLoader(
        ds, batch_size=64, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    seen = 0
    for batch in loader:
        assert batch.aggregate.shape[1:] == (32,) and batch.aggregate.dtype == torch.float32
        assert batch.power_w.shape[1:] == (2,) and batch.status_valid.shape == batch.power_w.shape
        assert torch.isfinite(batch.aggregate).all()
        seen += len(batch.aggregate)
    assert seen == len(ds)


def test_failed_prepare_leaves_previous_output_untouched(prepared: Path, tmp_path: Path) -> None:
    before = (prepared / "norm_stats.json").read_bytes()
    with pytest.raises(DataError, match="manifest not found"):
        prepare(tmp_path / "nothing", params(), prepared)
    assert (prepared / "norm_stats.json").read_bytes() == before


# ------------------------------------------------------------------------------------------- time split
def test_time_split_puts_each_device_in_every_split_oldest_first(tmp_path: Path) -> None:
    """One-site data (REFIT house 2): split_by time trains on the past and tests on the future of every
    device, with no slot in two splits, and normalises with statistics of the train part only."""
    frames = {"house-a": device_frames(0, hours=10), "house-b": device_frames(1, hours=6)}
    data = write_dataset(tmp_path / "data", frames)
    p = params(**{"prepare.split_by": "time", "prepare.val_fraction": 0.2, "prepare.test_fraction": 0.3})
    prepare(data, p, tmp_path / "prep")
    split = json.loads((tmp_path / "prep" / "split.json").read_text())
    assert split["split_by"] == "time"
    for s in ("train", "val", "test"):
        assert split[s] == ["house-a", "house-b"]
    for dev, hours in (("house-a", 10), ("house-b", 6)):
        (t0, t1), (v0, v1), (s0, s1) = (
            [pd.Timestamp(x) for x in split["time_ranges"][s][dev]] for s in ("train", "val", "test")
        )
        assert t0 == START and t1 == v0 and v1 == s0 and s1 == START + pd.Timedelta(hours=hours)
        assert (s1 - s0) / (s1 - t0) == pytest.approx(0.3, abs=1e-3)
        assert (v1 - v0) / (s1 - t0) == pytest.approx(0.2, abs=1e-3)
    index = {
        s: json.loads((tmp_path / "prep" / s / "index.json").read_text()) for s in ("train", "val", "test")
    }
    slots = {s: {d["device_id"]: d["length"] for d in ix["devices"]} for s, ix in index.items()}
    assert sum(slots[s]["house-a"] for s in slots) == 10 * 720
    train_agg = np.load(tmp_path / "prep" / "train" / "aggregate_w.npy")
    stats = json.loads((tmp_path / "prep" / "norm_stats.json").read_text())
    assert stats["aggregate"]["mean_w"] == pytest.approx(float(np.nanmean(train_agg)), rel=1e-4)
    assert stats["aggregate"]["count"] == sum(slots["train"].values())


def test_time_split_refuses_explicit_device_lists_and_too_short_train(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", {"house-a": device_frames(0, hours=2)})
    with pytest.raises(ConfigError, match="val_devices"):
        prepare(
            data, params(**{"prepare.split_by": "time", "prepare.test_devices": ["house-a"]}), tmp_path / "p"
        )
    bad = params(**{"prepare.split_by": "time", "prepare.val_fraction": 0.5, "prepare.test_fraction": 0.5})
    with pytest.raises(ConfigError, match="house-a"):
        prepare(data, bad, tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_chunks_hold_the_targets_of_the_windows_ending_in_them(prepared: Path) -> None:
    split = json.loads((prepared / "split.json").read_text())
    where = next(s for s in ("train", "val", "test") if "d2" in split[s])  # d2 has a 12 min gap
    w, n = 120, 50
    windows = WindowDataset(prepared, where, window_length=w, target="last", max_invalid_fraction=0.1)
    chunks = WindowDataset(
        prepared, where, window_length=w, target="last", stride=37, max_invalid_fraction=0.1, targets=n
    )
    window_at = {int(s): k for k, s in enumerate(windows.starts)}
    counted = masked = 0
    for i in range(len(chunks)):
        c = chunks[i]
        assert c.aggregate.shape == (w + n - 1,) and c.power_w.shape == (n, len(APPS))
        for r in range(n):  # target r ends the window starting r slots into the chunk
            k = window_at.get(int(chunks.starts[i]) + r)
            if k is None:  # no usable window ends there (the gap): the target does not count
                assert float(c.power_valid[r].sum() + c.status_valid[r].sum()) == 0.0
                masked += 1
                continue
            win = windows[k]
            torch.testing.assert_close(c.aggregate[r : r + w], win.aggregate)
            for got, want in zip(c[1:], win[1:], strict=True):
                torch.testing.assert_close(got[r], want)
            counted += 1
    assert counted > 1000 and masked > 0
    with pytest.raises(ConfigError, match="need target 'last'"):
        WindowDataset(prepared, where, window_length=w, target="midpoint", targets=n)
