"""The tool folders hold what runs: every script in pipelines/ and training/ answers --help, the named ones
print their commands with --dry-run, and every command their READMEs (and the other tool folders') show names
a real `airwatt` command, real options and real params keys (by the CLI's own definition, no server, no run).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from conftest import REPO

from airwatt.cli import app, parse_sets
from airwatt.config import load_params
from airwatt.errors import ConfigError

SCRIPT_FOLDERS = ("pipelines", "training")
README_FOLDERS = ("pipelines", "training", "serving", "labeling", "notebooks")
CLI = typer.main.get_command(app)
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]*[A-Z]\b")  # SECTION.KEY=VALUE, DIR, URI...


def scripts() -> list[Path]:
    found = (p for folder in SCRIPT_FOLDERS for p in sorted((REPO / folder).rglob("*")) if p.is_file())
    return [p for p in found if p.suffix in {".sh", ".py"} or p.read_bytes().startswith(b"#!")]


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    interpreter = [sys.executable] if script.suffix == ".py" else ["bash"]
    return subprocess.run(
        [*interpreter, str(script), *args], cwd="/", capture_output=True, text=True, timeout=60, check=False
    )


def command_options(command: Any) -> set[str]:
    """Every option name of a CLI command (typer's own click: read by attribute, not by class)."""
    opts = {"--help"}
    for param in command.params:
        if param.param_type_name == "option":
            opts |= {*param.opts, *param.secondary_opts}
    return opts


def check_overrides(sets: list[str], where: str) -> None:
    """SECTION.KEY=VALUE overrides (airwatt --set, dvc exp run -S): params.yaml accepts them."""
    concrete = [s for s in sets if not PLACEHOLDER.search(s.partition("=")[0])]
    try:
        load_params(REPO / "params.yaml", overrides=parse_sets(concrete))
    except ConfigError as e:
        pytest.fail(f"{where}: {e}")


def check_airwatt(words: list[str], where: str) -> None:
    """``airwatt SUB... [OPTIONS]``: the subcommands exist and every option is one of theirs."""
    command = CLI
    rest = words[1:]
    while hasattr(command, "commands") and rest and not rest[0].startswith(("-", "[")):
        sub = rest.pop(0)
        assert sub in command.commands, f"{where}: `airwatt ... {sub}`: no such command"
        command = command.commands[sub]
    known, sets = command_options(command), []
    for i, word in enumerate(rest):
        option = re.match(r"^\[?(--?[A-Za-z][\w-]*)", word)
        if option:
            assert option[1] in known, (
                f"{where}: {option[1]} is not an option of {command.name}: {sorted(known)}"
            )
            if option[1] == "--set" and i + 1 < len(rest):
                sets.append(rest[i + 1])
    check_overrides(sets, where)


def check_command(words: list[str], where: str) -> None:
    """One shell command a README shows or a script prints."""
    if not words:
        return
    if words[0] in {"airwatt", ".venv/bin/airwatt"}:
        check_airwatt(words, where)
    elif words[:3] == ["dvc", "exp", "run"]:
        check_overrides([words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"], where)
    elif words[:2] == ["mlflow", "run"] and "-e" in words:
        entry = words[words.index("-e") + 1]
        entries = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
        assert entry in entries or PLACEHOLDER.fullmatch(entry), f"{where}: no MLproject entry point"
    elif words[0] == "make" and len(words) > 1:
        targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"{where}: no Makefile target {words[1]}"
    elif words[0] == "bash" and len(words) > 1 and words[1].startswith(SCRIPT_FOLDERS):
        script = REPO / words[1]
        assert script.is_file(), f"{where}: {words[1]} not found"
        if "--dry-run" in script.read_text():  # what it would run, checked the same way
            done = run_script(script, *words[2:], "--dry-run")
            assert done.returncode == 0, f"{where}: {done.stderr}"
            for line in done.stdout.splitlines():
                check_command(shlex.split(line.strip()), f"{where} -> {line.strip()}")


def shell_commands(text: str) -> list[str]:
    """Commands in fenced code blocks (one per line, ``\\`` continued, split at &&) and inline code spans
    that start with a command the checks know."""
    commands: list[str] = []
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    for block in fenced:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True) if line.strip() else []
            commands += [shlex.join(part) for part in split_at(words, "&&")]
    prose = re.sub(r"^```[a-z]*\n.*?^```", "", text, flags=re.M | re.S)
    starts = ("airwatt ", ".venv/bin/airwatt ", "dvc exp run", "mlflow run", "make ", "bash ")
    commands += [span for span in re.findall(r"`([^`\n]+)`", prose) if span.startswith(starts)]
    return commands


def split_at(words: list[str], separator: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for word in words:
        if word == separator:
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


@pytest.mark.parametrize("script", scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_script_answers_help(script: Path) -> None:
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "prints no usage"


@pytest.mark.parametrize("folder", README_FOLDERS)
def test_every_command_a_tool_readme_shows_is_real(folder: str) -> None:
    readme = REPO / folder / "README.md"
    commands = shell_commands(readme.read_text())
    assert commands, f"{readme}: no command found"
    for command in commands:
        check_command(shlex.split(command), f"{folder}/README.md: {command}")


def test_the_readme_check_catches_a_wrong_option_subcommand_or_key() -> None:
    with pytest.raises(AssertionError, match="--no-such is not an option of train"):
        check_command(["airwatt", "train", "--data", "d", "--no-such"], "x")
    with pytest.raises(AssertionError, match="no such command"):
        check_command(["airwatt", "label", "sync"], "x")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)x: .*train\.no_such_key"):
        check_command(["airwatt", "protocol", "--set", "train.no_such_key=1"], "x")
    assert "airwatt train --data data/prepared --model multitask" in shell_commands(
        "```bash\nairwatt train --data data/prepared \\\n  --model multitask   # a comment\n```\n"
    )


def test_the_pipeline_readme_lists_every_dvc_stage_with_its_command() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    readme = (REPO / "pipelines" / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| `([^`]+)` \|", readme, re.M))
    assert list(rows) == list(stages)
    for name, stage in stages.items():
        assert rows[name] == " ".join(stage["cmd"].split()), name


def test_the_label_loop_runs_push_then_pull_and_repro_on_the_synced_dataset() -> None:
    script = REPO / "pipelines" / "label-loop.sh"
    push = run_script(script, "push", "--dry-run", "--model", "models:/m@champion", "--budget", "5")
    assert push.returncode == 0, push.stderr
    assert push.stdout.splitlines() == [
        "airwatt label setup --data data/synced",
        "airwatt label push --data data/synced --model models:/m@champion --budget 5",
    ]
    pull = run_script(script, "pull", "--dry-run")
    assert pull.stdout.splitlines() == ["airwatt label pull --data data/synced", "dvc repro"]
    for line in push.stdout.splitlines() + pull.stdout.splitlines():
        check_command(shlex.split(line), line)
    assert run_script(script, "--dry-run").returncode == 2  # no step: usage, no command run


def test_the_fleet_job_defaults_to_the_champion_on_the_validated_data_and_takes_overrides() -> None:
    script = REPO / "pipelines" / "fleet-report.sh"
    plain = run_script(script, "--dry-run", "--workers", "4")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [
        "airwatt fleet report --data data/validated --model models:/airwatt-disaggregator@champion "
        "--out data/fleet --workers 4"
    ]
    custom = run_script(script, "--dry-run", "--model", "data/model", "--period", "week")
    assert custom.stdout.splitlines() == [
        "airwatt fleet report --data data/validated --out data/fleet --model data/model --period week"
    ]
    for line in plain.stdout.splitlines() + custom.stdout.splitlines():
        check_command(shlex.split(line), line)


def test_every_named_experiment_is_a_valid_protocol_command() -> None:
    script = REPO / "training" / "experiment.sh"
    listing = run_script(script, "--list")
    assert listing.returncode == 0, listing.stderr
    names = [line for line in listing.stdout.splitlines() if line and not line.startswith(" ")]
    assert {"protocol", "quick-fold", "ablation"} <= set(names)
    for name in names:
        done = run_script(script, name, "--dry-run", "--set", "protocol.train={causal: {lr: 0.001}}")
        assert done.returncode == 0, done.stderr
        words = shlex.split(done.stdout)
        assert words[:2] == ["airwatt", "protocol"] and words[-2:] == [
            "--set",
            "protocol.train={causal: {lr: 0.001}}",
        ]
        check_command(words, f"experiment {name}")
    assert run_script(script, "no-such-experiment", "--dry-run").returncode == 2
