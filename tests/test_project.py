"""The project as a newcomer meets it: commands, layout, the README's promises, import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from recsys.config.settings import PROJECT_ROOT


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recsys", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=PROJECT_ROOT,
        timeout=120,
    )


def test_python_dash_m_recsys_lists_the_contract_commands() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for command in ("demo", "db", "generate-data", "extract", "features"):
        assert command in out.stdout


def test_installed_console_script_runs() -> None:
    script = PROJECT_ROOT / ".venv" / "bin" / "recsys"
    exe = script if script.exists() else None
    if exe is None:  # installed elsewhere (a different venv): use the one beside this interpreter
        exe = os.path.join(os.path.dirname(sys.executable), "recsys")
    out = subprocess.run([str(exe), "db", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "migrate" in out.stdout


def test_usage_errors_are_one_line_without_traceback(migrated_url: str) -> None:
    out = _run("features", env={"RECSYS_DATABASE_URL": migrated_url})
    assert out.returncode == 2
    assert "give --as-of DATE, or --from DATE --to DATE" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run("features", "--as-of", "2026-13-01", env={"RECSYS_DATABASE_URL": migrated_url})
    assert out.returncode == 2
    assert "expected a date as YYYY-MM-DD" in out.stderr


def test_cli_db_migrate_against_the_test_database(migrated_url: str) -> None:
    out = _run("db", "migrate", env={"RECSYS_DATABASE_URL": migrated_url})
    assert out.returncode == 0, out.stderr
    assert "schema is up to date" in out.stdout


def test_unreachable_database_is_reported_not_raised() -> None:
    out = _run("db", "migrate", env={"RECSYS_DATABASE_URL": "postgresql://x@127.0.0.1:1/none?connect_timeout=2"})
    assert out.returncode == 2
    assert "cannot connect to PostgreSQL" in out.stderr
    assert "Traceback" not in out.stderr


def test_layout_is_the_agreed_one() -> None:
    for name in ("dags", "plugins", "recsys", "sql", "templates", "tests"):
        assert (PROJECT_ROOT / name).is_dir(), name
    for name in ("docker-compose.yml", "requirements.txt", "README.md", "pyproject.toml", "Makefile", ".ci/run"):
        assert (PROJECT_ROOT / name).is_file(), name


def test_readme_quickstart_is_the_make_commands() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quickstart.splitlines() if line.strip().startswith("make ")]
    assert commands == ["make demo", "make airflow", "make test"]
    assert "make test" in (PROJECT_ROOT / ".ci" / "run").read_text()


def test_requirements_are_pinned() -> None:
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"requirements.txt: {line!r} is not pinned"


def test_docker_compose_parses_and_its_database_is_usable() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "healthcheck" in pg
    sources = {v.split(":")[0] for v in pg["volumes"]}
    # named volumes, or paths of this checkout (the init scripts); tests/test_compose.py checks the rest
    assert all(s in compose["volumes"] or (PROJECT_ROOT / s).exists() for s in sources), sources
