"""Atomic writes: write beside the target, then rename, so a crash leaves the old output intact."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from pydantic import BaseModel


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``target``; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what this package writes: typed results (pydantic models, as their
    JSON form), paths, timestamps, enums and numpy values. Anything else is a TypeError naming its type,
    never its ``str()`` written as if it were data."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, PurePath | dt.datetime | dt.date):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def write_json_atomic(target: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON (``json_default`` for typed results), atomically."""
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``target``; swap it in for ``target`` on success.

    The swap is two renames (old aside, new in), then the old copy is removed. If the block raises,
    the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the published directory gets the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where the filesystem cannot): shutil.copytree's copy_function for
    staging a dataset copy cheaply."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
