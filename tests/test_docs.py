"""The user documents keep their promises: examples run as written, links resolve, the README stays short.

The convention (docs/development.md, "Examples in the documents run"): every fenced block in README.md
and docs/*.md carries an info string. `bash` blocks are runnable and run here as written, from the
repository root, with the project's virtual environment first on PATH, `RECSYS_DATABASE_URL` pointing
at a fresh, migrated database on the test server and `RECSYS_DATA_DIR` in a temporary folder;
`bash slow` blocks too, in the tests marked slow. `sh` blocks are shell commands shown but not run
(Docker, servers that never exit, external SMTP, or commands that write into the checkout); `text`,
`sql`, `python`, `toml` and `mermaid` (charts) blocks are not shell. A block without an info string fails.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from recsys.config.settings import PROJECT_ROOT, Settings
from recsys.orchestration.notify import NightlyTimeouts

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
CONFIGURATION_PAGE = DOCS / "operate-the-dags.md"
RUNNABLE = {"bash": False, "bash slow": True}  # info string -> slow
SHOWN = {"sh", "text", "sql", "python", "toml", "mermaid"}
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*```(?P<info>[^`]*)$")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    path: Path
    line: int
    info: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of `path`, with the line its opening fence is on (1-based)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.relative_to(PROJECT_ROOT)}:{i + 1}: a fenced block is never closed")
        blocks.append(Block(path, i + 1, opening.group("info").strip(), "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in documents() for block in fenced_blocks(path)]


def _runnable_params() -> list[object]:
    return [
        pytest.param(block, id=block.where, marks=[pytest.mark.slow] if RUNNABLE[block.info] else [])
        for block in all_blocks()
        if block.info in RUNNABLE
    ]


def _venv_bin() -> Path:
    venv = PROJECT_ROOT / ".venv" / "bin"
    return venv if (venv / "recsys").exists() else Path(sys.executable).parent


def _psql_dir() -> Path | None:
    """Where psql comes from: the system's, else the one the embedded server ships."""
    if shutil.which("psql"):
        return None
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _block_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    path = [str(_venv_bin())]
    psql = _psql_dir()
    if psql is not None:
        path.append(str(psql))
    env["PATH"] = os.pathsep.join([*path, env.get("PATH", "")])
    env["RECSYS_DATABASE_URL"] = database_url
    env["RECSYS_DATA_DIR"] = str(data_dir)
    env["RECSYS_INBOX"] = str(data_dir / "inbox")
    return env


def test_every_block_says_whether_it_runs() -> None:
    unmarked = [
        f"{b.where}: info string {b.info!r}" for b in all_blocks() if b.info not in RUNNABLE and b.info not in SHOWN
    ]
    assert not unmarked, (
        "each fenced block needs an info string: bash / bash slow (run by tests/test_docs.py), "
        f"or sh / text / sql / python / toml (not run): {unmarked}"
    )


def test_there_are_runnable_examples() -> None:
    runnable = [b.where for b in all_blocks() if b.info in RUNNABLE]
    assert len(runnable) >= 5, runnable


def test_python_blocks_compile() -> None:
    for block in all_blocks():
        if block.info == "python":
            compile(block.body, block.where, "exec")


@pytest.mark.parametrize("block", _runnable_params())
def test_runnable_block_runs_as_written(block: Block, empty_database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = _block_env(empty_database_url, data_dir)
    migrate = subprocess.run(
        ["recsys", "db", "migrate"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.body],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900 if RUNNABLE[block.info] else 180,
    )
    assert out.returncode == 0, f"{block.where} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    inside = {b.line for b in fenced_blocks(path)}
    anchors: set[str] = set()
    in_block = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if number in inside or (in_block and line.strip() == "```"):
            in_block = not in_block
            continue
        if not in_block and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def _prose(path: Path) -> str:
    """The document without its fenced blocks and code spans (links there are not links)."""
    text = path.read_text(encoding="utf-8")
    for block in fenced_blocks(path):
        text = text.replace(block.body, "")
    return _CODE_SPAN.sub("", text)


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken: list[str] = []
    for path in documents():
        for m in _LINK.finditer(_prose(path)):
            target = m.group("target")
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(PROJECT_ROOT)}: {target}"
            if not destination.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{where} (no such heading)")
    assert not broken, broken


def test_readme_is_at_most_250_lines() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def _code_variables() -> set[str]:
    """Every RECSYS_* variable the settings, the DAG files and the package read."""
    names = {f"RECSYS_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    names |= {f"RECSYS_NIGHTLY_{f.name.upper()}_TIMEOUT_MINUTES" for f in dataclasses.fields(NightlyTimeouts)}
    sources = [*(PROJECT_ROOT / "dags").glob("*.py"), *(PROJECT_ROOT / "recsys").rglob("*.py")]
    for source in sources:
        names |= set(re.findall(r"(?<![A-Z0-9_])RECSYS_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])", source.read_text()))
    return names


def test_configuration_table_names_every_setting() -> None:
    text = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    section = text[text.index("\n## Configuration") :]
    documented = set(re.findall(r"`(RECSYS_[A-Z0-9_]+)`", section))
    missing = sorted(_code_variables() - documented)
    assert not missing, f"not in the configuration table of {CONFIGURATION_PAGE.name}: {missing}"
