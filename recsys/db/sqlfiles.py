"""SQL files: every statement the package runs from a file lives in `sql/<area>/<name>.sql`.

`load_sql(settings, "campaign/load_users")` returns the text of `sql/campaign/load_users.sql`
(under `settings.sql_dir`, or a folder given directly). Values travel as pyformat query parameters
(`%(name)s`); an identifier that must vary (a partition or staging table, a column list) is a
`{name}` placeholder the caller fills with `psycopg2.sql.SQL(text).format(name=sql.Identifier(...))`
(placeholders in comments are filled too, so comments of such files name them without braces).
Texts are cached by path and re-read when the file changes on disk.
"""

from __future__ import annotations

from pathlib import Path

from recsys.config.settings import Settings
from recsys.errors import RecsysError

_CACHE: dict[Path, tuple[int, int, str]] = {}


def sql_path(where: Settings | Path, name: str) -> Path:
    """The file of statement `name` ("area/statement", no suffix) under the SQL folder."""
    root = where.sql_dir if isinstance(where, Settings) else where
    return Path(root) / f"{name}.sql"


def load_sql(where: Settings | Path, name: str) -> str:
    """The text of `sql/<name>.sql` under `where` (a Settings, or the SQL folder itself)."""
    path = sql_path(where, name)
    try:
        stat = path.stat()
        cached = _CACHE.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecsysError(f"cannot read the SQL file {path}: {e.strerror or e}") from e
    _CACHE[path] = (stat.st_mtime_ns, stat.st_size, text)
    return text
