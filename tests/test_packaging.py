"""The package installs anywhere: sql/, templates/, dags/ and plugins/ ship inside it.

A checkout keeps them as top-level folders; pyproject.toml maps them into the package. These tests
check that every folder is listed (a new one would otherwise be left out of the wheel silently),
then build a real wheel, install it outside the checkout, and run the package from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from recsys.config.settings import PROJECT_ROOT, package_dir
from recsys.db import connect, fetch_value

SHIPPED = {"sql": "recsys.sql", "templates": "recsys.templates", "dags": "recsys.dags", "plugins": "recsys.plugins"}


def _setuptools() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _folders(root: Path) -> list[Path]:
    return [root, *sorted(p for p in root.rglob("*") if p.is_dir() and p.name != "__pycache__")]


def test_every_shipped_folder_and_subpackage_is_listed() -> None:
    config = _setuptools()
    listed = set(config["packages"])
    for folder, package in SHIPPED.items():
        assert config["package-dir"][package] == folder
        for path in _folders(PROJECT_ROOT / folder):
            name = ".".join([package, *path.relative_to(PROJECT_ROOT / folder).parts])
            assert name in listed, f"{path.relative_to(PROJECT_ROOT)} is not in pyproject.toml's packages"
    for path in _folders(PROJECT_ROOT / "recsys"):
        if (path / "__init__.py").exists():
            name = ".".join(path.relative_to(PROJECT_ROOT).parts)
            assert name in listed, f"subpackage {name} is not in pyproject.toml's packages"


def test_a_checkout_finds_its_top_level_folders() -> None:
    assert package_dir("sql") == PROJECT_ROOT / "sql"
    assert package_dir("templates") == PROJECT_ROOT / "templates"


_INSTALLED_CHECK = """
import sys
from pathlib import Path
import recsys
from recsys.orchestration.airflow_local import DAGS_FOLDER, PLUGINS_FOLDER
from recsys.config.rules import load_rules
from recsys.config.settings import load_settings, package_dir

site = Path(sys.argv[1]).resolve()
root = Path(recsys.__file__).resolve().parent
assert root.parent == site, f"recsys imported from {root}, not the installed copy"
for folder in (package_dir("sql"), package_dir("templates"), DAGS_FOLDER, PLUGINS_FOLDER):
    assert folder.is_dir() and folder.parent == root, folder
assert (DAGS_FOLDER / "recsys_nightly.py").is_file()
assert load_rules().templates_dir == root / "templates", load_rules().templates_dir
settings = load_settings()
assert settings.sql_dir == root / "sql", settings.sql_dir
assert settings.data_dir == Path.cwd() / "data", settings.data_dir
print("installed-ok", root)
"""


@pytest.mark.slow
def test_a_built_wheel_runs_outside_the_checkout(empty_database_url: str, tmp_path: Path) -> None:
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("recsys-*.whl")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env["PYTHONPATH"] = str(site)

    check = subprocess.run(
        [sys.executable, "-c", _INSTALLED_CHECK, str(site)], cwd=work, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "installed-ok" in check.stdout

    # The installed package migrates a brand-new database from the SQL files it carries.
    migrate = subprocess.run(
        [sys.executable, "-m", "recsys", "db", "migrate"],
        cwd=work,
        env={**env, "RECSYS_DATABASE_URL": empty_database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    with connect(empty_database_url) as conn:
        assert fetch_value(conn, "select to_regclass('recsys.campaign_offers') is not null") is True
        applied = fetch_value(conn, "select count(*) from recsys.schema_migrations where kind = 'versioned'")
    assert applied == len(list((PROJECT_ROOT / "sql" / "migrations").glob("*.sql")))
