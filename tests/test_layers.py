"""The package's layers, enforced: imports point down only, the model is pure, the truth stays in the
benchmark.

Layers, lowest first (ARCHITECTURE in the README): config, model, db, data, evaluation, campaign,
sender, orchestration, benchmark; above them the entry points (`recsys.cli`, `recsys.demo`). A
module imports only from its own layer or lower ones, wherever the import statement sits (module
level or inside a function). The model layer imports no database driver and nothing above config.
The generator's hidden truth (`recsys.benchmark`) is imported only by the benchmark itself and the
entry points, which print its tables: never by the DAG tasks (orchestration) or anything below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config.settings import PACKAGE_ROOT

LAYERS = ("config", "model", "db", "data", "evaluation", "campaign", "sender", "orchestration", "benchmark")
# modules at the package root: shared by every layer (errors) or above every layer (entry points)
ROOT_MODULES = {"recsys", "recsys.errors"}
ENTRY_POINTS = {"recsys.__main__", "recsys.cli", "recsys.cli_args", "recsys.demo"}
DATABASE_DRIVERS = ("psycopg2", "psycopg", "pgserver", "sqlalchemy")
TRUTH_READERS_OUTSIDE_BENCHMARK = {"recsys.cli", "recsys.demo"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _layer(module: str) -> str | None:
    if module in ROOT_MODULES or module in ENTRY_POINTS or not module.startswith("recsys."):
        return None
    head = module.split(".")[1]
    return head if head in LAYERS else "?"


MODULES = _modules()


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = [m for m in MODULES if m not in ROOT_MODULES and _layer(m) == "?"]
    assert not unplaced, f"modules outside the layers {LAYERS}: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_only(module: str) -> None:
    own = _layer(module)
    if own is None:
        return
    upward = sorted(
        name
        for name in _imports(MODULES[module], module)
        if (layer := _layer(name)) not in (None, "?") and LAYERS.index(layer) > LAYERS.index(own)
    )
    assert not upward, f"{module} ({own}) imports from a higher layer: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) == "model"))
def test_the_model_layer_is_pure(module: str) -> None:
    imports = _imports(MODULES[module], module)
    drivers = sorted(i for i in imports if i.split(".")[0] in DATABASE_DRIVERS)
    assert not drivers, f"{module} imports a database driver: {drivers}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_benchmark_reads_the_truth(module: str) -> None:
    if _layer(module) == "benchmark" or module in ENTRY_POINTS:
        return
    readers = sorted(i for i in _imports(MODULES[module], module) if i.startswith("recsys.benchmark"))
    assert not readers, f"{module} imports the benchmark (the hidden truth): {readers}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule itself can fail: a model module importing the database is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recsys.db import connect\n    import psycopg2\n")
    imports = _imports(bad, "recsys.model.bad")
    assert "recsys.db.connect" in imports and "psycopg2" in imports
    assert LAYERS.index(_layer("recsys.db.connect")) > LAYERS.index(_layer("recsys.model.bad"))


def test_importing_everything_below_the_benchmark_loads_no_truth() -> None:
    """At run time too: every module of the layers below the benchmark, imported together in a
    fresh interpreter, brings in no `recsys.benchmark` module."""
    below = sorted(m for m in MODULES if _layer(m) not in (None, "?", "benchmark"))
    code = (
        "import importlib, sys\n"
        f"for name in {below!r}:\n"
        "    importlib.import_module(name)\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith('recsys.benchmark')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # the last line: imported modules may log (Airflow's Celery defaults warn on stdout)
    assert out.stdout.strip().splitlines()[-1] == "loaded: []", out.stdout
