"""Generalisation (issue 14): one vocabulary across datasets, the REFIT day files, combining datasets into a
training mix, masking of appliances without truth, the weighted mix, and the glitch rule."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from airwatt.appliances import APPLIANCES, NOT_IN_VOCABULARY, normalize_appliance, vocabulary_name
from airwatt.config import load_params
from airwatt.dataset import DatasetWriter, DeviceInfo, open_dataset, read_manifest
from airwatt.dataset.combine import Source, combine_datasets, device_sources
from airwatt.errors import ConfigError, DataError
from airwatt.importers import import_dataset
from airwatt.labels import derive_labels
from airwatt.prepare import prepare
from airwatt.prepare.grid import GLITCH_FACTOR, grid_device
from airwatt.prepare.windows import WindowDataset

REPO = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-01-05T00:00:00Z")


# ------------------------------------------------------------------------------------------- vocabulary
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # REFIT raw release (refit_days/)
        ("fridge_freezer", "fridge"),
        ("Fridge-Freezer", "fridge"),
        ("chest_freezer", "freezer"),
        ("freezer_2", "freezer"),
        ("washer_dryer", "washing_machine"),
        ("combination_microwave", "microwave"),
        ("kettle_toaster", "kettle"),
        ("television", "tv"),
        ("electric_heater", "space_heater"),
        ("dryer", "tumble_dryer"),
        ("tumble_dryer", "tumble_dryer"),
        ("desktop_computer", "consumer_electronics"),
        ("hifi", "consumer_electronics"),
        ("router", "consumer_electronics"),
        ("upright_freezer", "freezer"),
        ("television_site", "tv"),
        ("toaster", "toaster"),
        ("lamp", "lighting"),
        ("lights", "lighting"),
        # REFIT-NILM / UK-DALE / REDD
        ("WashingMachine", "washing_machine"),
        ("dish washer", "dishwasher"),
        ("washer dryer", "washing_machine"),
        ("refrigerator", "fridge"),
    ],
)
def test_dataset_names_map_to_one_vocabulary(name: str, expected: str) -> None:
    assert normalize_appliance(name) == expected
    assert expected in APPLIANCES


@pytest.mark.parametrize("name", ["kenwood_kmix", "vivarium", "pond_pump", "unknown", "bread_maker"])
def test_loads_outside_the_vocabulary_are_skipped_not_guessed(name: str) -> None:
    assert name in NOT_IN_VOCABULARY
    assert vocabulary_name(name) is None


def test_an_unknown_name_is_still_an_error_naming_the_source() -> None:
    with pytest.raises(DataError, match=r"somefile\.csv: unknown appliance name 'spaceship'"):
        vocabulary_name("spaceship", where="somefile.csv")


# -------------------------------------------------------------------------------------- REFIT day files
def write_refit_day(path: Path, n: int, cols: dict[str, np.ndarray], step_s: int = 7) -> Path:
    ts = pd.date_range("2015-01-08", periods=n, freq=f"{step_s}s", tz="UTC")
    df = pd.DataFrame({"timestamp": [t.isoformat(sep=" ") for t in ts], **cols})
    with gzip.open(path, "wt") as f:
        df.to_csv(f, index=False)
    return path


def test_refit_day_files_sum_two_units_and_list_skipped_loads(tmp_path: Path) -> None:
    src = tmp_path / "days"
    src.mkdir()
    n = 600
    f1, f2, kmix = np.full(n, 40.0), np.full(n, 60.0), np.full(n, 300.0)
    write_refit_day(
        src / "refit_house7_2015-01-08.csv.gz",
        n,
        {"aggregate": 500 + f1 + f2 + kmix, "freezer_1": f1, "freezer_2": f2, "kenwood_kmix": kmix},
    )
    write_refit_day(
        src / "refit_house9_2015-01-08.csv.gz", n, {"aggregate": np.full(n, 200.0), "kettle": np.zeros(n)}
    )
    m = import_dataset("refit", src, tmp_path / "out")

    assert m.device_ids == ["refit-house7", "refit-house9"]
    assert m.device("refit-house7").appliances == ["freezer"]  # freezer_1 + freezer_2, no kenwood_kmix
    gt = open_dataset(tmp_path / "out").ground_truth(["refit-house7"])
    assert gt["freezer"].dropna().between(99.9, 100.1).all()  # the two units summed
    assert "kenwood_kmix" not in gt.columns
    assert "kenwood_kmix" in json.dumps(m.provenance)  # the skipped load is listed, not silently lost


def test_refit_folder_with_day_files_and_monthly_files_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    src.mkdir()
    write_refit_day(src / "refit_house7_2015-01-08.csv.gz", 10, {"aggregate": np.ones(10)})
    (src / "REFIT_House2_2014-03.gzip").write_bytes(b"")
    with pytest.raises(DataError, match="more than one REFIT form"):
        import_dataset("refit", src, tmp_path / "out")


def test_real_refit_days_import_every_house_into_the_vocabulary(shared_data: Path, tmp_path: Path) -> None:
    m = import_dataset("refit", shared_data / "refit_days", tmp_path / "out")
    files = sorted((shared_data / "refit_days").glob("refit_house*_*.csv*"))
    houses = sorted(f"refit-house{int(p.name.split('_')[1][5:])}" for p in files)
    assert sorted(m.device_ids) == houses
    assert len(houses) == 18
    assert set(m.appliances) <= set(APPLIANCES)
    with_fridge = [d for d in m.devices if "fridge" in d.appliances]
    assert len(with_fridge) >= 12  # fridge / fridge_freezer of most houses, one name


# ---------------------------------------------------------------------------------------------- combine
def write_set(root: Path, name: str, devices: dict[str, list[str]], hours: float = 4) -> Path:
    """A dataset whose devices each have their own appliances (a fridge cycling, a kettle once)."""
    n = int(hours * 720)
    t_s = np.arange(n) * 5
    ts = START + pd.to_timedelta(t_s, unit="s")
    waves = {
        "fridge": np.where((t_s % 3600) < 1200, 100.0, 0.0),
        "kettle": np.where((t_s > 3600) & (t_s < 3780), 2200.0, 0.0),
        "microwave": np.where((t_s > 7200) & (t_s < 7320), 1200.0, 0.0),
    }
    apps = sorted({a for v in devices.values() for a in v}, key=list(APPLIANCES).index)
    with DatasetWriter(root, name=name, appliances=apps, interval_s=5) as w:
        for i, (dev, own) in enumerate(devices.items()):
            gt = pd.DataFrame({"timestamp": ts, **{a: waves[a] for a in own}})
            total = sum((waves[a] for a in own), np.zeros(n))
            readings = pd.DataFrame({"timestamp": ts, "power_w": 100.0 * (i + 1) + total})
            w.add_device(
                DeviceInfo(device_id=dev, appliances=own),
                readings,
                ground_truth=gt,
                labels=derive_labels(gt, own, APPLIANCES, 5),
            )
    return root


def test_combine_renames_with_suffix_unions_the_vocabulary_and_records_sources(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", "a", {"h1": ["fridge"], "h2": ["fridge", "kettle"]})
    b = write_set(tmp_path / "b", "b", {"h1": ["microwave"]})
    m = combine_datasets(tmp_path / "mix", [Source("a", a), Source("b", b, device_suffix="-b")])

    assert m.device_ids == ["h1", "h1-b", "h2"]
    assert m.appliances == ["kettle", "microwave", "fridge"]  # the vocabulary's order
    assert device_sources(m) == {"h1": "a", "h2": "a", "h1-b": "b"}
    assert m.device("h1-b").appliances == ["microwave"]  # each device keeps its own inventory
    gt = open_dataset(tmp_path / "mix").ground_truth(["h1-b"])
    assert gt["fridge"].isna().all() and gt["microwave"].max() == 1200.0


def test_combine_names_both_sources_of_a_device_id_clash(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", "a", {"h1": ["fridge"]})
    b = write_set(tmp_path / "b", "b", {"h1": ["fridge"]})
    with pytest.raises(DataError, match=r"'h1' is in sources 'a' and 'b'.*device_suffix"):
        combine_datasets(tmp_path / "mix", [Source("a", a), Source("b", b)])
    assert not (tmp_path / "mix").exists()


def params(**overrides: object):
    return load_params(REPO / "params.yaml", overrides=dict(overrides))


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A mix of two sources: a1/a2/a3 sub-meter the fridge only, b1/b2 the kettle only."""
    a = write_set(tmp_path / "a", "a", {"a1": ["fridge"], "a2": ["fridge"], "a3": ["fridge"]})
    b = write_set(tmp_path / "b", "b", {"b1": ["kettle"], "b2": ["kettle"]})
    combine_datasets(tmp_path / "mix", [Source("a", a), Source("b", b)])
    return tmp_path / "mix"


def test_an_appliance_without_truth_is_masked_never_off(mixed: Path, tmp_path: Path) -> None:
    prepare(mixed, params(**{"prepare.val_devices": ["a3"], "prepare.test_devices": ["b2"]}), tmp_path / "p")
    ds = WindowDataset(tmp_path / "p", "train", window_length=64, stride=97, target="last")
    index = json.loads((tmp_path / "p" / "train" / "index.json").read_text())
    assert index["appliances"] == ["kettle", "fridge"]
    assert {d["device_id"]: d["source"] for d in index["devices"]} == {"a1": "a", "a2": "a", "b1": "b"}
    kettle, fridge = 0, 1
    for i in range(len(ds)):
        s, dev = ds[i], ds.locate(i)[0]
        has_kettle = dev.startswith("b")
        assert bool(s.power_valid[kettle]) == has_kettle and bool(s.status_valid[kettle]) == has_kettle
        assert bool(s.power_valid[fridge]) != has_kettle and bool(s.status_valid[fridge]) != has_kettle


def test_masked_appliances_add_no_loss_and_no_gradient(mixed: Path, tmp_path: Path) -> None:
    from airwatt.models import build_model, spec_from_prepared
    from airwatt.prepare.windows import WindowSample
    from airwatt.training.module import DisaggregationModule
    from airwatt.training.train import resolve

    prepare(mixed, params(**{"prepare.val_devices": ["a3"], "prepare.test_devices": ["b2"]}), tmp_path / "p")
    cfg, kw = resolve(params().train, "causal")
    spec = spec_from_prepared(tmp_path / "p", "causal", kw, 64, "last", max_invalid_fraction=0.1)
    module = DisaggregationModule(build_model(spec), spec, cfg)
    agg = torch.randn(4, 64)
    mask = torch.tensor([[0.0, 1.0]]).repeat(4, 1)  # kettle unknown, fridge known

    out = module(agg)

    def loss(kettle_w: float, kettle_on: float) -> float:
        power = torch.tensor([[kettle_w, 100.0]]).repeat(4, 1)
        status = torch.tensor([[kettle_on, 1.0]]).repeat(4, 1)
        return float(module._loss(out, WindowSample(agg, power, status, mask, mask))["loss"].detach())

    assert loss(0.0, 0.0) == loss(3000.0, 1.0)  # whatever the kettle's (unknown) target says
    out.power.retain_grad()
    out.on_logits.retain_grad()
    power = torch.tensor([[0.0, 100.0]]).repeat(4, 1)
    module._loss(out, WindowSample(agg, power, torch.zeros(4, 2), mask, mask))["loss"].backward()
    for grad in (out.power.grad, out.on_logits.grad):
        assert float(grad[:, 0].abs().max()) == 0.0  # the kettle: no gradient at all
        assert float(grad[:, 1].abs().max()) > 0.0  # the fridge learns


def test_prepare_excludes_devices_and_keeps_the_chosen_appliances(mixed: Path, tmp_path: Path) -> None:
    p = params(
        **{
            "prepare.val_devices": ["a3"],
            "prepare.test_devices": ["b2"],
            "prepare.exclude_devices": ["a2"],
            "prepare.appliances": ["fridge"],
        }
    )
    prepare(mixed, p, tmp_path / "p")
    split = json.loads((tmp_path / "p" / "split.json").read_text())
    assert split["train"] == ["a1", "b1"] and split["excluded"] == ["a2"]
    assert all("a2" not in split[s] for s in ("train", "val", "test"))
    stats = json.loads((tmp_path / "p" / "norm_stats.json").read_text())
    assert list(stats["appliances"]) == ["fridge"]
    with pytest.raises(ConfigError, match=r"exclude_devices \['nope'\]"):
        prepare(mixed, params(**{"prepare.exclude_devices": ["nope"]}), tmp_path / "q")
    with pytest.raises(ConfigError, match=r"appliances \['toaster'\]"):
        prepare(mixed, params(**{"prepare.appliances": ["toaster"]}), tmp_path / "q")


# ------------------------------------------------------------------------------------------- the mix
def _datamodule(prepared: Path, weights: dict[str, float]):
    from airwatt.training.datamodule import WindowDataModule

    dm = WindowDataModule(
        prepared,
        window_length=64,
        target="last",
        stride=1,
        val_stride=60,
        max_invalid_fraction=0.1,
        batch_size=32,
        num_workers=0,
        pin_memory=False,
        source_weights=weights,
        seed=3,
    )
    dm.setup("fit")
    return dm


def test_weighted_mix_draws_each_source_at_its_share(mixed: Path, tmp_path: Path) -> None:
    prepare(mixed, params(**{"prepare.val_devices": ["a3"], "prepare.test_devices": ["b2"]}), tmp_path / "p")
    dm = _datamodule(tmp_path / "p", {"a": 1.0, "b": 3.0})
    mix = dm.mix()
    assert mix["a"]["share"] == pytest.approx(0.25) and mix["b"]["share"] == pytest.approx(0.75)
    assert mix["a"]["windows"] == pytest.approx(2 * mix["b"]["windows"], rel=0.01)  # a: two devices, b: one
    sources = dm.train_set.window_sources().astype(str)
    drawn = sources[np.fromiter(iter(dm.sampler()), dtype=np.int64)]
    assert (drawn == "b").mean() == pytest.approx(0.75, abs=0.02)  # not the 1/3 of plain shuffling
    again = sources[np.fromiter(iter(_datamodule(tmp_path / "p", {"a": 1.0, "b": 3.0}).sampler()), np.int64)]
    assert (again == drawn).all()  # seeded


def test_a_source_without_a_weight_is_an_error_naming_it(mixed: Path, tmp_path: Path) -> None:
    prepare(mixed, params(**{"prepare.val_devices": ["a3"], "prepare.test_devices": ["b2"]}), tmp_path / "p")
    with pytest.raises(ConfigError, match=r"no weight for source\(s\) \['b'\]"):
        _datamodule(tmp_path / "p", {"a": 1.0}).mix()
    with pytest.raises(ConfigError, match="weight 0"):
        _datamodule(tmp_path / "p", {"a": 0.0, "b": 0.0}).sampler()


# ---------------------------------------------------------------------------------------------- glitches
def test_sub_meter_glitches_are_unknown_not_targets() -> None:
    n = 100
    ts = START + pd.to_timedelta(np.arange(n) * 5, unit="s")
    fridge = np.full(n, 90.0)
    fridge[40:43] = 32768.0  # a plug's counter overflow
    gt = pd.DataFrame({"timestamp": ts, "fridge": fridge})
    readings = pd.DataFrame({"timestamp": ts, "power_w": 200.0 + fridge})
    g = grid_device(readings, gt, None, ["fridge"], interval_s=5, max_fill_s=30)
    assert not g.power_valid[40:43, 0].any() and not g.status_valid[40:43, 0].any()
    assert g.power_valid[:40, 0].all() and g.power_valid[43:, 0].all()
    assert 3 * APPLIANCES["fridge"].max_w < 32768 and GLITCH_FACTOR == 3.0
    kept = grid_device(readings, gt, None, ["fridge"], interval_s=5, max_fill_s=30, glitch_factor=None)
    assert kept.power_valid[40:43, 0].all()


def test_real_mix_has_no_glitch_in_its_training_statistics(shared_data: Path, tmp_path: Path) -> None:
    import_dataset("ukdale", shared_data / "ukdale_days", tmp_path / "uk")
    prepare(
        tmp_path / "uk", params(**{"prepare.val_devices": [], "prepare.test_devices": []}), tmp_path / "p"
    )
    stats = json.loads((tmp_path / "p" / "norm_stats.json").read_text())["appliances"]
    for name, s in stats.items():
        if s["fitted"]:
            assert s["max_w"] <= GLITCH_FACTOR * APPLIANCES[name].max_w, name
    assert read_manifest(tmp_path / "uk").device_ids


# ---------------------------------------------------------------------------------------- augmentation
@pytest.fixture
def augmentable(tmp_path: Path) -> Path:
    """Four devices whose aggregate is exactly base load + fridge + kettle + microwave (all sub-metered)."""
    apps = ["fridge", "kettle", "microwave"]
    data = write_set(tmp_path / "d", "d", {f"h{i}": apps for i in range(4)}, hours=6)
    prepare(data, params(**{"prepare.val_devices": ["h2"], "prepare.test_devices": ["h3"]}), tmp_path / "p")
    return tmp_path / "p"


def _augmented(
    prepared: Path,
    add: float,
    remove: float,
    seed: int = 5,
    distract: float = 0.0,
    jitter: float = 0.0,
    targets: int = 1,
):
    from airwatt.training.augment import ActivationBank, AugmentedWindows

    base = WindowDataset(prepared, "train", window_length=256, stride=13, target="last", targets=targets)
    bank = ActivationBank.from_split(base, pad_slots=12, max_slots=2000, max_per_appliance=50, seed=seed)
    aug = AugmentedWindows(
        base,
        bank,
        add_ratio=add,
        remove_ratio=remove,
        seed=seed,
        distract_ratio=distract,
        scale_jitter=jitter,
    )
    return base, bank, aug


def test_the_activation_bank_comes_from_training_devices_only(augmentable: Path) -> None:
    base, bank, _ = _augmented(augmentable, 1.0, 0.0)
    split = json.loads((augmentable / "split.json").read_text())
    assert bank.devices == set(split["train"]) == {"h0", "h1"}  # never h2 (validation) or h3 (test)
    assert bank.sizes["kettle"] == 2 and bank.sizes["microwave"] == 2  # one each per training device
    assert 6 <= bank.sizes["fridge"] <= 14  # a cycle an hour, cut at the split's ends
    fridge = bank.activations[base.appliances.index("fridge")][1]  # the first starts with the data
    assert fridge.power_w[fridge.on].min() == 100.0 and not fridge.on[:5].any()  # padded with its context


@pytest.mark.parametrize(
    ("add", "remove", "jitter"), [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.7, 0.5, 0.0), (1.0, 0.0, 0.4)]
)
def test_augmented_targets_stay_consistent_with_the_aggregate(
    augmentable: Path, add: float, remove: float, jitter: float
) -> None:
    base, _, aug = _augmented(augmentable, add, remove, jitter=jitter)
    stats = base.stats["aggregate"]
    changed = 0
    for i in range(len(aug)):
        s, b = aug[i], base[i]
        base_w = 100.0 * (int(base.locate(i)[0][1:]) + 1)  # write_set: device i's base load
        agg_w = float(s.aggregate[-1]) * stats["std_w"] + stats["mean_w"]
        assert agg_w - base_w == pytest.approx(float(s.power_w.sum()), abs=0.05)  # aggregate = base + targets
        on = s.power_w.numpy() >= np.array([APPLIANCES[a].on_threshold_w for a in base.appliances])
        assert (s.status.numpy()[on] == 1).all() or remove > 0 or not on.any()
        changed += not torch.equal(s.aggregate, b.aggregate)
    assert changed > 0.3 * len(aug)
    again = _augmented(augmentable, add, remove, jitter=jitter)[2]
    assert all(torch.equal(aug[i].aggregate, again[i].aggregate) for i in range(0, len(aug), 7))  # seeded


@pytest.fixture
def with_distractors(tmp_path: Path) -> Path:
    """Four devices with a fridge, a kettle and a microwave; the model's appliances are the fridge and the
    microwave, so the kettle is a distractor."""
    data = write_set(
        tmp_path / "d", "d", {f"h{i}": ["fridge", "kettle", "microwave"] for i in range(4)}, hours=6
    )
    overrides = {
        "prepare.val_devices": ["h2"],
        "prepare.test_devices": ["h3"],
        "prepare.appliances": ["fridge", "microwave"],
    }
    prepare(data, params(**overrides), tmp_path / "p")
    return tmp_path / "p"


def test_prepare_cuts_distractors_from_training_devices_only(with_distractors: Path) -> None:
    from airwatt.prepare.activations import DISTRACTORS, read_activations

    names, acts = read_activations(with_distractors / "train" / DISTRACTORS)
    assert names == ["kettle"]  # the dataset's loads that are not the model's
    assert sorted(a.device for a in acts) == ["h0", "h1"]  # never h2 (validation) or h3 (test)
    kettle = acts[0]
    assert kettle.power_w[kettle.on].min() == 2200.0 and kettle.on.sum() == 35  # 175 s at 5 s (> 3600 s)
    assert not (with_distractors / "val" / DISTRACTORS).exists()
    assert not (with_distractors / "test" / DISTRACTORS).exists()


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_distractors_change_the_aggregate_and_never_the_targets(
    with_distractors: Path, jitter: float
) -> None:
    base, bank, aug = _augmented(with_distractors, 0.0, 0.0, distract=1.0, jitter=jitter)
    assert bank.distractor_sizes == {"kettle": 2}
    stats = base.stats["aggregate"]
    changed = 0
    for i in range(len(aug)):
        s, b = aug[i], base[i]
        assert torch.equal(s.power_w, b.power_w) and torch.equal(s.status, b.status)  # targets as they were
        added = (s.aggregate - b.aggregate).numpy() * stats["std_w"]
        assert added.min() > -0.01
        if added.max() > 1:
            changed += 1
            kettle = added[added > 1]
            lo, hi = 2200 * np.exp(-jitter), 2200 * np.exp(jitter)
            assert kettle.min() >= lo - 0.5 and kettle.max() <= hi + 0.5
            assert np.ptp(kettle) < 0.5  # one activation, one scale
    assert changed > 0.1 * len(aug)


@pytest.mark.parametrize(("add", "remove"), [(1.0, 0.0), (0.0, 1.0)])
def test_augmented_chunks_keep_every_target_consistent_with_the_aggregate(
    augmentable: Path, add: float, remove: float
) -> None:
    base, _, aug = _augmented(augmentable, add, remove, jitter=0.3, targets=64)
    stats = base.stats["aggregate"]
    changed = 0
    for i in range(len(aug)):
        s, b = aug[i], base[i]
        base_w = 100.0 * (int(base.locate(i)[0][1:]) + 1)
        agg_w = s.aggregate[-64:].numpy() * stats["std_w"] + stats["mean_w"]  # (64,) at the target slots
        np.testing.assert_allclose(agg_w - base_w, s.power_w.sum(dim=1).numpy(), atol=0.05)
        changed += not torch.equal(s.power_w, b.power_w)
    assert changed > 0.2 * len(aug)


def test_removal_zeroes_one_load_and_its_targets(augmentable: Path) -> None:
    base, _, aug = _augmented(augmentable, 0.0, 1.0)
    removed = 0
    for i in range(len(aug)):
        s, b = aug[i], base[i]
        gone = (b.power_w > 0) & (s.power_w == 0)
        assert int(gone.sum()) <= 1 and (s.power_w <= b.power_w).all()
        removed += int(gone.sum())
    assert removed > 0


def test_training_with_augmentation_logs_the_bank(augmentable: Path, tmp_path: Path, caplog) -> None:
    from airwatt.training.train import train

    p = params(
        **{
            "train.model": "causal",
            "train.batch_size": 16,
            "train.limit_train_batches": 2,
            "train.limit_val_batches": 1,
            "train.max_epochs": 1,
            "train.num_workers": 0,
            "train.checkpoint_dir": str(tmp_path / "ckpt"),
            "train.augment": {"add_ratio": 0.5, "remove_ratio": 0.2, "max_per_appliance": 10, "max_s": 3600},
        }
    )
    with caplog.at_level("INFO", logger="airwatt.training.train"):
        result = train(
            p,
            augmentable,
            out_dir=tmp_path / "m",
            metrics_path=tmp_path / "t.json",
            epochs_path=tmp_path / "e.csv",
            use_mlflow=False,
        )
    assert result.global_step == 2
    assert "augmentation: activations per appliance" in caplog.text
