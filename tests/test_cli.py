"""Every `airwatt` command answers --help with its purpose and options."""

from __future__ import annotations

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
