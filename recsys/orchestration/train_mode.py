"""How a night trains: retrain or fine-tune, and which model a fine-tune continues.

`recsys.orchestration.train` asks here: whether there is a champion for the running catalog and
feature set (`no_champion_reason`), which PPO model a fine-tune would continue (`fine_tune_parent`)
and what `auto` means tonight (`resolve_mode`), each with the reason it gives the operator.
"""

from __future__ import annotations

from recsys.config.catalog import Catalog
from recsys.db import Connection
from recsys.errors import RecsysError
from recsys.evaluation.registry import PPO as PPO_ALGORITHM
from recsys.evaluation.registry import ModelRecord, latest_model
from recsys.model.observation import feature_fingerprint

MODES = ("auto", "retrain", "fine_tune")


def resolve_mode(
    mode: str, current: ModelRecord | None, catalog: Catalog, parent: ModelRecord | None = None
) -> tuple[str, str]:
    """(mode, why) for `auto`; checks that `fine_tune` is possible. `parent` is the PPO model a
    fine-tune would continue (`fine_tune_parent`): the champion, or the newest PPO model of the
    catalog while the champion is the rule heuristic."""
    if mode not in MODES:
        raise RecsysError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    reason = no_champion_reason(current, catalog)
    if not reason and parent is None:
        assert current is not None
        reason = (
            f"the champion is {_champion_kind(current, catalog)} "
            "and no PPO model of this catalog and feature set is registered to continue"
        )
    if mode == "fine_tune" and reason:
        raise RecsysError(f"cannot fine-tune: {reason}; use --mode retrain")
    if mode == "auto":
        if reason:
            return "retrain", reason
        if parent is not None and current is not None and parent.model_version != current.model_version:
            return "fine_tune", (
                f"the champion is {_champion_kind(current, catalog)}: continuing the newest PPO model "
                f"of this catalog and feature set, {parent.model_version}"
            )
        return "fine_tune", "a compatible champion exists"
    return mode, "requested"


def _champion_kind(current: ModelRecord, catalog: Catalog) -> str:
    """The champion's algorithm, and what it was trained on when that is not today's."""
    older = [
        *([] if current.same_catalog(catalog) else ["a smaller catalog"]),
        *([] if current.feature_fingerprint == feature_fingerprint() else ["an earlier feature set"]),
    ]
    return current.algorithm + (f" of {' and '.join(older)}" if older else "")


def no_champion_reason(current: ModelRecord | None, catalog: Catalog) -> str:
    """Why there is no champion for the running catalog and feature set ("" when there is one).

    A champion trained on a catalog the running one contains (the catalog grew: the rest, new
    offers), or on an earlier feature set (the observation grew), stays the champion: it scores on
    the grown catalog and reads its own columns, is re-evaluated next to each challenger, and a
    challenger must beat it through the gate (no bootstrap promotion)."""
    if current is None:
        return "there is no champion"
    try:
        current.action_ids(catalog)
    except RecsysError:
        return "the offer catalog changed since the champion was trained (it lost some of the champion's offers)"
    try:
        current.feature_columns()
    except RecsysError:
        return "the feature set changed since the champion was trained (this version cannot build its features)"
    return ""


def fine_tune_parent(conn: Connection, current: ModelRecord | None, catalog: Catalog) -> ModelRecord | None:
    """The PPO model a fine-tune continues: the champion when it is a PPO model of this very
    catalog and feature set, otherwise (the champion is the rule heuristic, or was trained on a
    smaller catalog or an earlier feature set: its network has fewer outputs or inputs) the newest
    PPO model of the catalog and feature set, or None."""
    if (
        current is not None
        and current.algorithm.upper() == PPO_ALGORITHM
        and current.same_catalog(catalog)
        and current.feature_fingerprint == feature_fingerprint()
    ):
        return current
    return latest_model(conn, catalog, algorithm=PPO_ALGORITHM)
