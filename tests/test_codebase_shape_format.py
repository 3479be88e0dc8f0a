"""How code is laid out: the formatter's (``ruff format``) everywhere, except real tables.

A ``# fmt: skip`` marker keeps a statement as written. It is allowed only on a table whose column alignment
carries meaning (rows of values aligned in columns); packing several arguments, items or statements on one
line is not a table. ``# fmt: off`` regions are not used at all."""

from __future__ import annotations

import io
import re
import tokenize
from functools import cache

from conftest import REPO

# Each remaining marker must guard a table whose columns are aligned: today the two label-row tables of
# tests/test_labeling.py (device, appliance, start, end, source, annotator, task). Removing one lowers this
# number; a new marker needs a real table, and raising this number says so in review.
MAX_FMT_SKIP = 2

MARKER = re.compile(r"#\s*fmt:\s*(skip|off)\b")


def _comment_markers(text: str) -> list[tuple[str, int]]:
    """(``skip`` or ``off``, line) of each marker comment in ``text``; strings that mention one are not."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        m = MARKER.search(tok.string) if tok.type == tokenize.COMMENT else None
        if m:
            found.append((m.group(1), tok.start[0]))
    return found


@cache
def _markers() -> dict[str, list[str]]:
    """``skip``/``off`` -> the places (path:line) of those comments in src, tests and serving."""
    found: dict[str, list[str]] = {"skip": [], "off": []}
    for top in ("src", "tests", "serving"):
        for path in sorted((REPO / top).rglob("*.py")):
            for kind, line in _comment_markers(path.read_text(encoding="utf-8")):
                found[kind].append(f"{path.relative_to(REPO)}:{line}")
    return found


def test_fmt_skip_markers_guard_only_tables() -> None:
    """At most MAX_FMT_SKIP ``# fmt: skip`` markers in src, tests and serving; each must guard a table."""
    skips = _markers()["skip"]
    assert len(skips) <= MAX_FMT_SKIP, (
        f"{len(skips)} '# fmt: skip' markers (at most {MAX_FMT_SKIP}): keep the formatter's layout unless "
        "the statement is a table whose column alignment carries meaning:\n" + "\n".join(skips)
    )


def test_no_fmt_off_regions() -> None:
    assert _markers()["off"] == []


def test_the_count_reads_comments_not_strings() -> None:
    text = 'x = [1,  2]  # fmt: skip\ny = "# fmt: skip"\n# fmt: off\nz = 1  #fmt:skip\n'
    assert _comment_markers(text) == [("skip", 1), ("off", 3), ("skip", 4)]
