"""`python -m recsys` runs the command line."""

from __future__ import annotations

from recsys.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
