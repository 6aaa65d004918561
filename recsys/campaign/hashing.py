"""Stable hashes for the holdout, exploration and uniform draws, vectorised over users.

splitmix64 (Steele, Lea and Flood 2014; the seeding mix of java.util.SplittableRandom) in numpy
uint64 arithmetic, keyed by an 8-byte blake2b digest of the salt and purpose. The same on every
machine and every Python run (unlike `hash()`), and each purpose gets its own key, so the draws are
independent of one another and of the shard hash (PostgreSQL's hashtextextended, see
sql/functions/40_campaign.sql).
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of x + golden ratio, element-wise on uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def key(*parts: object) -> np.uint64:
    """A 64-bit key from text parts (salt, purpose, date): blake2b, 8 bytes, little-endian."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


def uniform(user_ids: np.ndarray, *parts: object) -> np.ndarray:
    """A float64 in [0, 1) per user, a pure function of (parts, user_id)."""
    ids = np.asarray(user_ids, dtype=np.int64).view(np.uint64)
    h = splitmix64(splitmix64(ids ^ key(*parts)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
