"""What a run was made from: the repository root, the git commit and whether the source differs from it, and
the version of the prepared data (DVC's md5 from dvc.lock, else a content hash). No MLflow here."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current one) holding dvc.yaml or .git."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").is_file() or (d / ".git").exists():
            return d
    return here


def pipeline_outputs(root: Path) -> list[str]:
    """Paths under ``root`` that `dvc repro` itself rewrites: dvc.lock, data/, and every out, metric and plot
    dvc.yaml declares (with the .gitignore DVC keeps beside it). A run changing them is not a code change."""
    paths = {"dvc.lock", "data"}
    try:
        stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        stages = {}
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                for path in [entry] if isinstance(entry, str) else list(entry):
                    paths |= {str(path).rstrip("/"), (Path(path).parent / ".gitignore").as_posix()}
    return sorted(p for p in paths if p != ".gitignore")


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """What a run was made from: {"git_commit": sha or "unknown", "git_dirty": "true"/"false"/"unknown"}.

    ``git_dirty`` says whether the project's tracked files differ from that commit, leaving out what the
    pipeline itself writes (``pipeline_outputs``: dvc.lock, data/, metrics), so a `dvc repro` from a clean
    clone records "false", and an edited source file or params.yaml "true"; untracked files never count.
    """
    root = repo_root(cwd)

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    excluded = [f":(exclude){p}" for p in pipeline_outputs(root)]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    dirty = "unknown" if status is None else str(bool(status.strip())).lower()
    if status and status.strip():
        changed = [line[3:] for line in status.splitlines()]
        log.debug("source differs from commit %s: %s", commit.strip()[:12], ", ".join(changed[:10]))
    return {"git_commit": commit.strip(), "git_dirty": dirty}


def _dvc_lock_md5(prepared_dir: Path) -> str | None:
    """The md5 dvc.lock records for ``prepared_dir`` when it is an output there, else None."""
    root = repo_root(prepared_dir.parent if prepared_dir.exists() else None)
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        rel = prepared_dir.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == rel and out.get("md5"):
                return str(out["md5"])
    return None


def _content_hash(prepared_dir: Path) -> str:
    """sha256 of the prepared directory's json/npy files (relative path + bytes), first 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(p for p in prepared_dir.rglob("*") if p.suffix in {".json", ".npy"}):
        h.update(path.relative_to(prepared_dir).as_posix().encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def dataset_version(prepared_dir: Path) -> str:
    """``dvc:<md5>`` from dvc.lock when the folder is a DVC output there, else ``sha256:<content hash>``.

    dvc.lock records the data of the last `dvc repro`/`dvc commit`; a hand-edited folder is not what it names,
    so outside a DVC checkout (tests, notebooks) the content itself is hashed.
    """
    md5 = _dvc_lock_md5(Path(prepared_dir))
    return f"dvc:{md5}" if md5 else f"sha256:{_content_hash(Path(prepared_dir))}"
