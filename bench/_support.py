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

from recsys.config.settings import load_settings
from recsys.db import database_url, scratch_database

__all__ = ["LOCAL_SERVER", "bench_server", "scratch_database"]

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def bench_server(default: str | None = None) -> str:
    """The server a bench script creates its scratch database on (see the module docstring)."""
    return os.environ.get("RECSYS_BENCH_DATABASE_URL") or default or database_url(load_settings())
