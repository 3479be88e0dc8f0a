"""Where code lives: a package's ``__init__.py`` names what the package holds and re-exports its public
names; the stage logic is in a named module beside it (docs: the modules' own docstrings)."""

from __future__ import annotations

import ast
import importlib

import pytest
from conftest import REPO

REEXPORTS = {
    "airwatt.sync": (
        "airwatt.sync.run",
        ["Window", "importer_window", "requested_window", "source_span", "sync"],
    ),
    "airwatt.importers": ("airwatt.importers.run", ["DEFAULT_MAX_FILL_S", "KINDS", "import_dataset"]),
    "airwatt.prepare": ("airwatt.prepare.run", ["ARRAYS", "load_array", "prepare"]),
}


@pytest.mark.parametrize("package", sorted(REEXPORTS))
def test_package_init_holds_no_logic(package: str) -> None:
    init = REPO / "src" / package.replace(".", "/") / "__init__.py"
    tree = ast.parse(init.read_text())
    kinds = {type(node).__name__ for node in tree.body} - {"Expr", "ImportFrom", "Import", "Assign"}
    assert kinds == set(), f"{init}: {kinds}"


@pytest.mark.parametrize("package", sorted(REEXPORTS))
def test_package_reexports_the_public_names(package: str) -> None:
    module_name, names = REEXPORTS[package]
    pkg, module = importlib.import_module(package), importlib.import_module(module_name)
    assert sorted(pkg.__all__) == sorted(names)
    for name in names:
        assert getattr(pkg, name) is getattr(module, name), name
