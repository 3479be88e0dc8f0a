"""Platform exports served over HTTP(S): download them into a folder, then parse them as a folder.

``sync.path`` is either

- a single export file URL (its name matches readings*.csv|.parquet|.jsonl, ...), or
- a base URL whose ``index.json`` lists the files, relative to the base URL, as ``{"files": [...]}`` (a bare
  JSON list also works); names may contain sub-folders but no ``..``; ``devices.json`` may be listed too.

Errors name the URL of the file they are about.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from airwatt.errors import ConfigError, DataError
from airwatt.sync.exports import DEVICES_FILE, export_kind

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
TIMEOUT_S = 60.0


def _get(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, dest.open("wb") as fh:
            shutil.copyfileobj(resp, fh)
    except urllib.error.HTTPError as e:
        raise DataError(f"download failed: HTTP {e.code} {e.reason}", file=url) from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"download failed: {reason}", file=url) from None


def _index_names(index_path: Path, url: str) -> list[str]:
    try:
        raw = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"index is not valid JSON: {e}", file=url) from None
    names = raw.get("files") if isinstance(raw, dict) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError('index must be {"files": ["readings-....csv", ...]}', file=url)
    for n in names:
        p = PurePosixPath(n)
        if p.is_absolute() or ".." in p.parts or (export_kind(p.name) is None and n != DEVICES_FILE):
            raise DataError(f"index lists {n!r}: not an export file name below the base URL", file=url)
    return names


def fetch_exports(url: str, dest: Path) -> dict[Path, str]:
    """Download the exports at ``url`` into ``dest``; returns local path -> URL (for error messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"sync.path {url!r}: the url source needs an http:// or https:// URL")
    name = PurePosixPath(parts.path).name
    if export_kind(name) is not None:
        base, names = url.rsplit("/", 1)[0] + "/", [name]
    else:
        base = url if url.endswith("/") else url + "/"
        index_url = urllib.parse.urljoin(base, INDEX_FILE)
        _get(index_url, dest / INDEX_FILE)
        names = _index_names(dest / INDEX_FILE, index_url)
        (dest / INDEX_FILE).unlink()
    where: dict[Path, str] = {}
    for n in names:
        file_url = urllib.parse.urljoin(base, urllib.parse.quote(n))
        local = dest.joinpath(*PurePosixPath(n).parts)
        local.parent.mkdir(parents=True, exist_ok=True)
        _get(file_url, local)
        where[local] = file_url
        log.info("downloaded %s", file_url)
    return where
