"""recsys: a reinforcement-learning offer engine run as nightly batch campaigns on PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
