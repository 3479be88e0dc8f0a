"""Test and benchmark tooling: real-data tests required in CI, the fast tier, the default timeout, --quick."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.machine import parse_args

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((REPO / "tests" / "benchmarks").glob("bench_*.py"))


def _pytest(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRWATT_REQUIRE", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow  # fresh pytest processes import the package's stack
def test_real_data_tests_skip_for_users_and_fail_when_required(tmp_path: Path) -> None:
    shutil.copy2(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_real.py").write_text(
        "def test_reads_it(shared_data):\n    assert shared_data.is_dir()\n"
    )
    absent = str(tmp_path / "no-such-data")
    skipped = _pytest(["test_real.py"], tmp_path, AIRWATT_SHARED_DATA=absent)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert f"public NILM data not found at {absent}" in skipped.stdout
    required = _pytest(
        ["test_real.py"], tmp_path, AIRWATT_SHARED_DATA=absent, AIRWATT_REQUIRE_SHARED_DATA="1"
    )
    assert required.returncode == 1 and "1 error" in required.stdout, required.stdout
    assert "AIRWATT_REQUIRE_SHARED_DATA=1 requires it" in required.stdout
    present = _pytest(
        ["test_real.py"], tmp_path, AIRWATT_SHARED_DATA=str(tmp_path), AIRWATT_REQUIRE_SHARED_DATA="1"
    )
    assert present.returncode == 0 and "1 passed" in present.stdout, present.stdout


@pytest.mark.parametrize("present", [True, False])
def test_ci_requires_the_real_data_tests_where_the_data_is(tmp_path: Path, present: bool) -> None:
    """.ci/run with `make` replaced by a stub that prints what the test run would see."""
    repo = tmp_path / "clone"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "training").mkdir()  # .ci/run installs PostgreSQL through this script: a stub records the call
    (repo / "training" / "mlflow-postgres.sh").write_text('echo "postgres $*"\n')
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "make").write_text('#!/bin/sh\necho "make $* require=${AIRWATT_REQUIRE_SHARED_DATA:-unset}"\n')
    (stub / "make").chmod(0o755)
    data = tmp_path / "shared-data"
    if present:
        data.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AIRWATT_REQUIRE_SHARED_DATA"}
    env |= {"PATH": f"{stub}{os.pathsep}{env['PATH']}", "AIRWATT_SHARED_DATA": str(data)}
    proc = subprocess.run(
        ["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == f"make test require={'1' if present else 'unset'}"
    assert "postgres install" in proc.stdout.splitlines()


def _fast_tier_expression() -> str:
    recipe = (REPO / "Makefile").read_text().split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    found = re.search(r'pytest -m "([^"]+)"', recipe)
    assert found, "make test-fast selects by markers"
    return found.group(1)


@pytest.mark.slow  # fresh pytest processes import the package's stack
def test_the_fast_tier_leaves_out_servers_dvc_repro_and_real_data() -> None:
    expression = _fast_tier_expression()
    files = [
        "test_labeling_server.py",
        "test_serving_http.py",
        "test_pipeline_dvc.py",
        "test_protocol.py",
        "test_validation.py",
        "test_importers.py",
        "test_dvc_deps.py",
    ]
    proc = _pytest(["--collect-only", "-m", expression, *(f"tests/{f}" for f in files)], REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    chosen = {line.split("::")[0].removeprefix("tests/") for line in proc.stdout.splitlines() if "::" in line}
    assert not chosen & {"test_labeling_server.py", "test_serving_http.py", "test_pipeline_dvc.py"}
    assert {"test_validation.py", "test_importers.py", "test_dvc_deps.py"} <= chosen
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert not [
        i for i in ids if "refit_30s_outages" in i or "one_parent_run" in i
    ]  # real data, MLflow server


def test_every_test_has_a_default_timeout(request: pytest.FixtureRequest) -> None:
    assert float(request.config.getini("timeout")) >= 300  # generous: a stuck server or loop fails, not hangs


def test_quick_sets_short_defaults_that_explicit_options_override() -> None:
    def parser() -> argparse.ArgumentParser:
        ap = argparse.ArgumentParser()
        ap.add_argument("--devices", type=int, default=20)
        ap.add_argument("--days", type=float, default=14)
        return ap

    quick = {"devices": 3, "days": 1}
    assert vars(parse_args(parser(), quick, [])) == {"devices": 20, "days": 14, "quick": False}
    assert vars(parse_args(parser(), quick, ["--quick"])) == {"devices": 3, "days": 1, "quick": True}
    assert vars(parse_args(parser(), quick, ["--quick", "--days", "2"])) == {
        "devices": 3,
        "days": 2,
        "quick": True,
    }


@pytest.mark.slow  # imports each script's stack (torch, mlflow, bentoml...) in a fresh interpreter
@pytest.mark.parametrize("script", [b.stem for b in BENCHMARKS])
def test_every_benchmark_accepts_quick(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.benchmarks.{script}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--quick" in proc.stdout
