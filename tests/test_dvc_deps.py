"""dvc.yaml's code deps cover every module a stage runs, so editing any of them marks the stage changed.

Each stage's command (`airwatt data sync ...`) is looked up in the typer app; its import closure is computed
statically: the imports inside the command function, then every airwatt module those reach, following all of
each module's imports (module level and inside functions, which run when the stage calls them; imports under
`if TYPE_CHECKING:` never run and are left out), plus the package `__init__` files that importing a module
executes and the file that defines the command. The CLI's wiring (the root module's imports that only register
other commands) is not part of a stage. A directory dep covers the files under it.
"""

from __future__ import annotations

import ast
import inspect
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` under src/, or None (an imported name, or not ours)."""
    base = SRC.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``tree`` (any depth), except those only type checkers see."""
    for child in ast.iter_child_nodes(tree):
        if _type_checking_only(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def imported_modules(tree: ast.AST, importer: str, is_package: bool) -> set[str]:
    """airwatt modules the imports under ``tree`` name (``from a import b``: a, and a.b if it is a module)."""
    out: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                base = importer.split(".") if is_package else importer.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names = [mod, *(f"{mod}.{a.name}" for a in node.names)]
        out |= {n for n in names if n.split(".")[0] == "airwatt" and module_file(n) is not None}
    return out


def with_packages(name: str) -> list[str]:
    """``a.b.c`` -> a, a.b, a.b.c: importing a module runs its packages' __init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(fn: Callable[..., Any]) -> dict[Path, str]:
    """Source files a command runs -> the module that first imported each (for the failure message)."""
    entry = Path(inspect.getsourcefile(fn) or "")
    tree = ast.parse(entry.read_text())
    defs = (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    node = next(n for n in defs if n.name == fn.__name__)
    entry_module = module_name(entry)
    seen: dict[Path, str] = {}
    for name in with_packages(entry_module):
        seen[module_file(name)] = "(the command)"  # type: ignore[index]
    todo = [(m, f"{entry_module}.{fn.__name__}") for m in sorted(imported_modules(node, entry_module, False))]
    while todo:
        name, by = todo.pop()
        for mod in with_packages(name):
            path = module_file(mod)
            if path is None or path in seen:
                continue
            seen[path] = by
            sub = ast.parse(path.read_text())
            todo += [(m, mod) for m in sorted(imported_modules(sub, mod, path.name == "__init__.py"))]
    return seen


def command_of(cmd: str) -> Callable[..., Any]:
    """The typer callback that runs a stage's `airwatt ...` command line."""
    from airwatt.cli import app

    words = shlex.split(cmd)
    assert words[0] == "airwatt", cmd
    group = app
    for word in words[1:]:
        for info in group.registered_commands:
            if info.name == word or (info.name is None and info.callback and info.callback.__name__ == word):
                assert info.callback is not None
                return info.callback
        sub = next((g for g in group.registered_groups if g.name == word), None)
        assert sub is not None and sub.typer_instance is not None, f"{cmd}: no command {word!r}"
        group = sub.typer_instance
    raise AssertionError(f"{cmd}: no command")


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage: str) -> None:
    spec = STAGES[stage]
    deps = [d for d in spec.get("deps", []) if isinstance(d, str)]
    closure = import_closure(command_of(spec["cmd"]))
    uncovered = {p: by for p, by in sorted(closure.items()) if not covered(p, deps)}
    missing = [f"{p.relative_to(REPO)} (imported by {by})" for p, by in uncovered.items()]
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not list as deps: " + ", ".join(missing)
    absent = [d for d in deps if d.startswith("src/") and not (REPO / d).exists()]
    assert not absent, f"dvc.yaml stage {stage!r} lists deps that do not exist: {absent}"


def test_the_closure_follows_function_level_imports() -> None:
    """The check itself: sync imports the simulator inside a function, and it is in sync's closure."""
    from airwatt.cli import sync_cmd

    closure = import_closure(sync_cmd)
    assert SRC / "airwatt/simulate/__init__.py" in closure
    assert SRC / "airwatt/appliances.py" in closure
    assert SRC / "airwatt/cli.py" in closure
    assert SRC / "airwatt/serving/cli.py" not in closure  # CLI wiring of another command
