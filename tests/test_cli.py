"""Every `airwatt` command answers --help with its purpose and options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from airwatt.cli import app


def _command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = [[]]

    def walk(cmd: object, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "airwatt")
def test_every_command_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    # A help page that says what the command does, not only its name.
    assert len(result.output.split()) > 15


def test_data_errors_exit_2_with_a_one_line_message(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airwatt.cli", "data", "info", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "manifest.json: dataset manifest not found" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------- what a stage prints
NOISE = (
    "litlogger",
    "💡 Tip",
    "LeafSpec",
    "Downloading artifacts",
    "Creating initial MLflow database tables",
)


@pytest.mark.slow
def test_library_chatter_is_kept_out_of_the_log() -> None:
    """After the CLI's logging set-up: a Lightning line is printed once, its adverts and a dependency's
    deprecation warning not at all."""
    script = """
import warnings
from airwatt.logs import setup_logging
setup_logging()
import lightning.pytorch  # noqa: F401  (installs Lightning's own console handler)
from lightning.pytorch.utilities.rank_zero import rank_zero_info
rank_zero_info("GPU available: False, used: False")
rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert sum("GPU available" in ln for ln in lines) == 1, proc.stderr
    assert not [ln for ln in lines if any(n in ln for n in NOISE)], proc.stderr


@pytest.mark.slow  # simulates, prepares and trains a tiny model through the real CLI (~40 s on 2 cores)
def test_airwatt_train_prints_the_stage_progress_result_and_where_to_look(tmp_path) -> None:
    from pathlib import Path

    import yaml

    from airwatt.config import load_params
    from airwatt.prepare import prepare
    from airwatt.simulate import simulate_fleet

    repo = Path(__file__).resolve().parents[1]
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["simulate"]["devices"] = 3
    p["train"].update(
        model="causal",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        batch_size=32,
        num_workers=0,
        checkpoint_dir=str(tmp_path / "ckpt"),
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(tmp_path / "params.yaml")
    simulate_fleet(tmp_path / "sim", params.simulate, start=params.sync.start, days=0.25, interval_s=5)
    prepare(tmp_path / "sim", params, tmp_path / "prepared")
    args = [
        "train",
        "--params",
        "params.yaml",
        "--data",
        "prepared",
        "--out",
        "model",
        "--metrics",
        "metrics/train.json",
        "--epochs",
        "metrics/epochs.csv",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    airwatt = str(Path(sys.executable).parent / "airwatt")
    proc = subprocess.run(
        [airwatt, *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    lightning = [ln.split(": ", 1)[-1] for ln in lines if "GPU available" in ln or "Seed set" in ln]
    assert len(lightning) == len(set(lightning)) == 2, lightning  # each Lightning line once
    assert not [ln for ln in lines if any(n in ln for n in NOISE)]
    assert not [ln for ln in lines if "Total params" in ln]  # no layer table
    assert any("trained causal" in ln for ln in lines)  # the result
    assert any("registered airwatt-disaggregator version 1" in ln for ln in lines)  # where to look
