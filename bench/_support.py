"""What every bench script shares: the server it works on and a scratch database dropped at the end.

The scripts run as `python bench/<script>.py`, which puts this folder first on `sys.path`, so they
import this module as `_support`.

The server, in this order: `RECSYS_BENCH_DATABASE_URL`; else the script's own documented default
(`bench_nightly.py`, `bench_env.py` and `bench_features.py`: the local server at 127.0.0.1:5432;
`bench_score.py`: `RECSYS_TEST_DATABASE_URL` when set); else `RECSYS_DATABASE_URL`; else the
embedded server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from recsys.config.settings import load_settings
from recsys.db import create_database, database_url, drop_database

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def bench_server(default: str | None = None) -> str:
    """The server a bench script creates its scratch database on (see the module docstring)."""
    return os.environ.get("RECSYS_BENCH_DATABASE_URL") or default or database_url(load_settings())


@contextmanager
def scratch_database(server: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new database `<prefix>_<random>` on `server`: its URL, dropped when the block ends, also
    on an error or Ctrl-C. With `keep` it stays, and its name is printed."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            drop_database(server, name)
