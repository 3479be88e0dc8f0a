"""The cross-house protocol, reduced (two simulated sources, two folds, two seeds, a few steps) against a
real MLflow tracking server: one parent run with a child per fold and seed, the held-out house never in
training or validation, a table per appliance and fold, and a rerun that reuses every result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from airwatt.config import load_params
from airwatt.dataset import Dataset
from airwatt.errors import DataError
from airwatt.protocol import Fold, make_folds, recordings_of, run_protocol

REPO = Path(__file__).resolve().parents[1]
FOLDS = ["sim-0001", "sim-0002"]
REDUCED = {
    "protocol.sources": {
        "sim": {"kind": "simulator", "devices": 4, "days": 0.5, "seed": 11},
        "sim_b": {"kind": "simulator", "devices": 4, "days": 0.25, "seed": 12, "device_suffix": "-b"},
    },
    "protocol.weights": {"sim": 1.0, "sim_b": 0.5},
    "protocol.folds": FOLDS,
    "protocol.cross_dataset": ["sim-0003"],
    "protocol.val_devices": ["sim-0000"],
    "protocol.seeds": [1, 2],
    "protocol.models": ["causal", "multitask"],  # the real-time model and the offline one beside it
    "protocol.max_steps": 3,
    "protocol.reference": ["fridge", "kettle"],
    "protocol.adapt": {
        "days": [0.2, 0.4],
        "eval_days": 0.15,
        "max_steps": 2,
        "finetune": "all",
        "val_fraction": 0.3,
    },
    "protocol.train": {"causal": {"sequence_targets": 64, "lr_schedule": "one_cycle"}},  # causal: chunks
    "train.arch": {"causal": {}, "multitask": {"widths": [8, 16], "hidden": 32, "head_hidden": 8}},
    "train.batch_size": 16,
    "train.limit_val_batches": 2,
    "train.num_workers": 0,
}


def test_recordings_of_a_house_split_test_and_other_recordings() -> None:
    ids = ["redd-house2", "redd-house20", "refit-house2", "refit-house2-30s", "refit-house21"]
    assert recordings_of("refit-house2", ids) == (("refit-house2",), ("refit-house2-30s",))
    assert recordings_of("redd-house2", ids) == (("redd-house2",), ())  # house20 is another house


def test_a_fold_the_mix_does_not_hold_is_an_error_naming_it() -> None:
    pp = load_params(REPO / "params.yaml", overrides=REDUCED).protocol
    assert pp is not None
    with pytest.raises(DataError, match="protocol fold 'sim-0001': no such device"):
        make_folds(pp, ["sim-0000", "sim-0002", "sim-0003"])
    folds = make_folds(pp, ["sim-0000", "sim-0001", "sim-0001-b", "sim-0002", "sim-0003"])
    assert folds[0] == Fold("sim-0001", "loho", ("sim-0001",), ("sim-0001-b",))
    assert [f.kind for f in folds] == ["loho", "loho", "cross_dataset"]


def test_protocol_train_overrides_only_keys_the_protocol_leaves_to_it() -> None:
    from airwatt.config import ConfigError

    with pytest.raises(ConfigError, match=r"\['seed'\] are not train keys or are set by the protocol"):
        load_params(REPO / "params.yaml", overrides={**REDUCED, "protocol.train": {"causal": {"seed": 3}}})
    with pytest.raises(ConfigError, match=r"\['no_such_key'\]"):
        load_params(
            REPO / "params.yaml", overrides={**REDUCED, "protocol.train": {"causal": {"no_such_key": 1}}}
        )
    with pytest.raises(ConfigError, match=r"\['devices'\] are not train keys or are set by the protocol"):
        load_params(REPO / "params.yaml", overrides={**REDUCED, "protocol.train": {"causal": {"devices": 2}}})


def test_protocol_runs_train_in_one_process_whatever_train_devices_says(tmp_path: Path) -> None:
    """Under DDP every rank reruns the whole command: the protocol's runs ask for one process."""
    from airwatt.protocol import train_overrides

    params = load_params(REPO / "params.yaml", overrides={**REDUCED, "train.devices": 4})
    assert params.protocol is not None
    over = train_overrides(params, params.protocol, "causal", 1, tmp_path)
    assert over["train.devices"] == 1
    assert load_params(REPO / "params.yaml", overrides={**REDUCED, **over}).train.devices == 1


def _children(client, parent: str) -> list:
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=100)


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str):
    work = tmp_path_factory.mktemp("protocol") / "work"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        result = run_protocol(REPO / "params.yaml", work, overrides=REDUCED, repo=REPO)
        yield work, result
    finally:
        mp.undo()


def test_one_parent_run_with_a_child_per_fold_and_seed(protocol_run, mlflow_server: str) -> None:
    from mlflow import MlflowClient

    _, result = protocol_run
    client = MlflowClient(mlflow_server)
    children = _children(client, result.parent_run_id)
    assert len(children) == 2 * 3 * 2  # 2 models x (2 held-out houses + 1 cross-dataset) x 2 seeds
    got = sorted(
        (c.data.params["train.model"], c.data.tags["protocol.fold"], c.data.params["train.seed"])
        for c in children
    )
    assert got == sorted(
        (m, f, s) for m in ("causal", "multitask") for f in [*FOLDS, "sim-0003"] for s in "12"
    )
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "causal.served.loho.mae_w" in parent.data.metrics
    assert "multitask.offline.loho.mae_w" in parent.data.metrics
    assert "multitask.served.loho.mae_w" not in parent.data.metrics
    assert {a.path for a in client.list_artifacts(result.parent_run_id)} >= {"protocol.md", "protocol.json"}
    for c in children:
        rule = "served" if c.data.params["train.model"] == "causal" else "offline"
        assert f"test.{rule}.mean.mae_w" in c.data.metrics


def test_the_held_out_house_is_never_in_training_or_validation(protocol_run) -> None:
    work, _ = protocol_run
    for house in [*FOLDS, "sim-0003"]:
        split = json.loads((work / "folds" / house / "prepared" / "split.json").read_text())
        assert split["test"] == [house]
        assert split["excluded"] == [f"{house}-b"]  # its other recording: in no split
        seen = set(split["train"]) | set(split["val"])
        assert house not in seen and f"{house}-b" not in seen
        assert split["val"] == ["sim-0000"]
        index = json.loads((work / "folds" / house / "prepared" / "train" / "index.json").read_text())
        assert {d["device_id"] for d in index["devices"]} == set(split["train"])
        assert index["appliances"] == ["fridge", "kettle"]  # the reference appliances, the model's heads


def test_the_table_has_a_row_per_appliance_and_a_column_per_fold(protocol_run) -> None:
    work, result = protocol_run
    table = (work / "protocol.md").read_text()
    assert table == result.table
    header = next(line for line in table.splitlines() if line.startswith("| appliance"))
    assert header == "| appliance | sim-0001 | sim-0002 | sim-0003 (cross) |"
    for row in ("| fridge |", "| kettle |", "| **mean** |"):
        assert row in table
    assert "leave-one-house-out (served): mean F1" in table and "worst fold" in table
    doc = json.loads((work / "protocol.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    runs = doc["runs"]
    assert len(runs) == 12 and {r["seed"] for r in runs} == {1, 2}
    assert "causal, served" in table and "causal, offline" in table
    assert "multitask, offline" in table and "multitask, served" not in table  # never served in real time
    fold = doc["summary"]["causal"]["folds"]["sim-0001"]["served"]["mean"]["mae_w"]
    assert len(fold["seeds"]) == 2 and fold["mean"] == pytest.approx(sum(fold["seeds"]) / 2)


def test_each_run_keeps_its_evaluation_report_and_the_switch_events_it_scored(protocol_run) -> None:
    """Every run's evaluation report is the JSON `airwatt evaluate` writes (not a repr of the object), and
    the switch-on event table is its switch figures, mean over seeds."""
    work, result = protocol_run
    for run in result.runs:
        path = work / "folds" / run.fold / "metrics" / f"{run.model}-seed{run.seed}-test.json"
        report = json.loads(path.read_text())
        assert report["rule"] == run.rule and report["model"]["arch"] == run.model
        assert run.switches is not None
        for a in ("fridge", "kettle"):
            scored = report["switches"].get(a)  # absent: the test device has no truth for it
            for key, value in run.switches[a].items():
                assert (scored or {}).get(key) == pytest.approx(value, nan_ok=True), (run, a, key)
        assert any(report["switches"].get(a) for a in ("fridge", "kettle"))
    causal = [r for r in result.runs if r.model == "causal" and r.fold == "sim-0001"]
    cell = result.summary["causal"]["folds"]["sim-0001"]["switches"]["fridge"]["false_switches_per_day"]
    seeds = [r.switches["fridge"]["false_switches_per_day"] for r in causal if r.switches]
    assert cell["mean"] == pytest.approx(sum(seeds) / len(seeds))
    table = result.table
    assert "causal, switch-on events" in table and "multitask, switch-on events" in table
    rows = [line for line in table.splitlines() if line.startswith("| fridge |")]
    assert any(line.count(" / ") == 2 * 3 for line in rows)  # detected / delay / false a day, 3 folds


def test_the_few_label_curve_fine_tunes_on_the_first_days_and_scores_the_last(protocol_run) -> None:
    work, result = protocol_run
    assert all(r.adapt is None for r in result.runs if r.model == "multitask")
    for run in (r for r in result.runs if r.model == "causal"):
        assert run.adapt is not None
        assert set(run.adapt["served"]) == {"0", "0.2"} and run.adapt["not_available"] == [0.4]
        eval_start = pd.Timestamp(run.adapt["eval"][0])
        days = Dataset(work / "adapt" / run.fold / "days-0.2").readings()["timestamp"]
        assert days.max() < eval_start  # the labelled days never overlap the scored ones
        scored = Dataset(work / "adapt" / run.fold / "eval").readings()["timestamp"]
        assert scored.min() >= eval_start
    assert set(result.adapt["causal"]["folds"]) == {*FOLDS, "sim-0003"}
    assert "few-label curve" in result.table and "| fold | k = 0 | k = 0.2 | k = 0.4 |" in result.table
    assert "k = 0.2: mean F1 gain over k = 0" in result.table


def test_a_rerun_reuses_every_result_and_starts_no_training(
    protocol_run, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    work, first = protocol_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    again = run_protocol(REPO / "params.yaml", work, overrides=REDUCED, repo=REPO)
    assert [r.run_id for r in again.runs] == [r.run_id for r in first.runs]
    assert again.table == first.table
    assert _children(MlflowClient(mlflow_server), again.parent_run_id) == []
    # a subset (one fold, one seed, one model) reuses the full form's result for it: no new training
    subset = {"protocol.seeds": [2], "protocol.folds": [FOLDS[1]], "protocol.cross_dataset": []}
    subset |= {"protocol.models": ["causal"]}
    part = run_protocol(REPO / "params.yaml", work, overrides={**REDUCED, **subset}, repo=REPO)
    want = [r.run_id for r in first.runs if (r.model, r.fold, r.seed) == ("causal", FOLDS[1], 2)]
    assert [r.run_id for r in part.runs] == want
    assert _children(MlflowClient(mlflow_server), part.parent_run_id) == []


@pytest.mark.slow
def test_cli_protocol_without_a_protocol_section_is_a_one_line_error(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text(text[: text.index("\nprotocol:")] + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "airwatt.cli",
            "protocol",
            "--params",
            str(params),
            "--work",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "params.yaml has no protocol section" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_protocol_set_overrides_reach_the_params_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    from airwatt.cli import parse_sets

    sets = parse_sets(
        ["protocol.train={causal: {lr: 0.001}}", "train.power_loss_when=on", "protocol.seeds=[4]"]
    )
    assert sets == {
        "protocol.train": {"causal": {"lr": 0.001}},
        "train.power_loss_when": "on",
        "protocol.seeds": [4],
    }
    p = load_params(overrides=sets)
    assert p.protocol.train == {"causal": {"lr": 0.001}} and p.train.power_loss_when == "on"
    cli = [str(Path(sys.executable).parent / "airwatt"), "protocol", "--no-mlflow", "--work", str(tmp_path)]
    bad = subprocess.run([*cli, "--set", "protocol.max_step=3"], capture_output=True, text=True)
    assert bad.returncode != 0 and "protocol.max_step" in bad.stderr
    shape = subprocess.run([*cli, "--set", "max_steps"], capture_output=True, text=True)
    assert shape.returncode != 0 and "SECTION.KEY=VALUE" in shape.stderr
