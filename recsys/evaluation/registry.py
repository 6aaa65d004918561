"""The model registry (`recsys.policy_models`): register, look up, load and crown champions.

Every trained model is stored with its artifact (the SB3 zip, bytes and sha256), the catalog and
feature-set fingerprints it was trained on, its evaluation and the gate's decision. Scoring only
ever uses the champion. A model scores on any configured catalog that contains the one it was
trained on (its stored action list, matched by offer type, value, channel and timing; the actions
it never saw, such as the rest, it never picks); a model whose actions are not all configured, or
whose feature set differs from the running code's, is refused.

Not every model is trained: a catalog's first champion is the rule heuristic
(`recsys.model.baselines.RuleHeuristicPolicy`), registered by `rule_heuristic_record` with
algorithm `rule_heuristic`, an empty artifact and no training steps. `load_policy` turns any
record into the `Policy` that scoring, `recommend` and evaluation use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psycopg2.extras import Json

from recsys.config.catalog import Catalog, action_mapping
from recsys.db import Connection, fetch_all
from recsys.errors import RecsysError
from recsys.evaluation.results import PROMOTED_VERDICTS, GateVerdict
from recsys.model.baselines import Policy, RuleHeuristicPolicy
from recsys.model.observation import feature_columns, feature_fingerprint

PPO = "PPO"
"""`algorithm` of a trained Stable-Baselines3 PPO model (the artifact is its zip)."""
RULE_HEURISTIC = "rule_heuristic"
"""`algorithm` of the rule heuristic: no artifact, training mode `baseline`."""
ALGORITHMS = (PPO, RULE_HEURISTIC)


@dataclass
class ModelRecord:
    model_version: str
    parent_version: str | None
    algorithm: str
    training_mode: str
    hyperparameters: dict[str, Any]
    seed: int
    catalog_fingerprint: str
    feature_fingerprint: str
    catalog: list[dict[str, Any]]
    trained_on: dt.date
    total_timesteps: int
    artifact: bytes
    train_seconds: float | None = None
    training_window_start: dt.date | None = None
    training_window_end: dt.date | None = None
    response_model: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    gate_decision: str | None = None
    gate_reasons: list[Any] = field(default_factory=list)
    is_champion: bool = False
    created_at: dt.datetime | None = None

    @property
    def artifact_sha256(self) -> str:
        return hashlib.sha256(self.artifact).hexdigest()

    def action_ids(self, catalog: Catalog) -> np.ndarray:
        """int (n_model_actions,): the configured catalog's action id of each action the model was
        trained on, in the model's order (identity on the catalog it was trained on). Raises
        RecsysError when the configured catalog lacks some of them."""
        if self.catalog_fingerprint == catalog.fingerprint():
            return np.arange(catalog.n_actions)
        try:
            return action_mapping(self.catalog, catalog)
        except (KeyError, TypeError, ValueError) as e:
            raise RecsysError(
                f"model {self.model_version} was trained on an offer catalog the configured one does not "
                f"contain (fingerprint {self.catalog_fingerprint[:12]}, configured {catalog.fingerprint()[:12]}): "
                f"{e}; retrain it (`recsys train --mode retrain`) or restore the offers it was trained on"
            ) from e

    def same_catalog(self, catalog: Catalog) -> bool:
        """Trained on exactly this catalog (same actions, same ids)."""
        return self.catalog_fingerprint == catalog.fingerprint()

    def check_compatible(self, catalog: Catalog) -> None:
        """Refuse a model whose actions are not all in the configured catalog (one trained on a
        catalog the configured one contains is fine), or which reads another feature set."""
        self.action_ids(catalog)
        self.feature_columns()

    def feature_columns(self) -> np.ndarray | None:
        """Where the model's inputs sit in today's observation (None: it reads today's feature set);
        raises for a feature set this version does not know."""
        try:
            return feature_columns(self.feature_fingerprint)
        except RecsysError as e:
            raise RecsysError(f"model {self.model_version} reads a feature set this version cannot build: {e}") from e


def load_policy(record: ModelRecord, catalog: Catalog) -> Policy:
    """The `Policy` a registered model decides with: its PPO actor, or the rule heuristic.

    Refuses an algorithm this code cannot run (a clear error, never a fallback policy). The caller
    checks compatibility (`record.check_compatible`) first where the catalog may have changed.
    """
    algorithm = record.algorithm
    if algorithm.upper() == PPO:
        from recsys.model.policy import PPOPolicy, load_sb3_model

        ids = record.action_ids(catalog)
        return PPOPolicy(
            load_sb3_model(record.artifact),
            catalog,
            name=record.model_version,
            action_ids=ids,
            feature_columns=record.feature_columns(),
        )
    if algorithm == RULE_HEURISTIC:
        record.action_ids(catalog)  # the rule picks its offers by what they are: they must exist
        try:
            policy = RuleHeuristicPolicy(catalog)
        except ValueError as e:
            raise RecsysError(f"model {record.model_version}: {e}") from e
        policy.name = record.model_version
        return policy
    raise RecsysError(
        f"model {record.model_version} has algorithm {algorithm!r}, which this version cannot run "
        f"(known: {', '.join(ALGORITHMS)}): crown another model or upgrade recsys"
    )


def load_ppo_model(record: ModelRecord) -> Any:
    """The Stable-Baselines3 model of a registered PPO model, to continue training it (fine-tune).
    Refuses a model that is not PPO (the rule heuristic has nothing to continue)."""
    if record.algorithm.upper() != PPO:
        raise RecsysError(
            f"model {record.model_version} is {record.algorithm}, not PPO: there is no network to continue"
        )
    from recsys.model.policy import load_sb3_model

    return load_sb3_model(record.artifact)


def rule_heuristic_record(catalog: Catalog, *, as_of: dt.date, response_model: dict[str, Any]) -> ModelRecord:
    """The rule heuristic of `catalog` as a registry row (not yet registered): the conservative
    baseline a catalog starts with. One version per catalog and feature set, so registering it
    again for the same catalog finds the row that is there. Raises ValueError when the catalog lacks
    the offers the rule needs (discount, free shipping, recommendation)."""
    RuleHeuristicPolicy(catalog)  # the catalog can express the rule
    fingerprint = catalog.fingerprint()
    features = feature_fingerprint()
    return ModelRecord(
        model_version=f"rule-heuristic-{fingerprint[:8]}-{features[:8]}",
        parent_version=None,
        algorithm=RULE_HEURISTIC,
        training_mode="baseline",
        hyperparameters={},
        seed=0,
        catalog_fingerprint=fingerprint,
        feature_fingerprint=features,
        catalog=catalog_json(catalog),
        trained_on=as_of,
        total_timesteps=0,
        artifact=b"",
        response_model=response_model,
    )


def catalog_json(catalog: Catalog) -> list[dict[str, Any]]:
    return [
        {
            "action_id": a.action_id,
            "offer_type": a.offer_type,
            "value": a.value,
            "channel": a.channel,
            "timing": a.timing,
        }
        for a in catalog.actions
    ]


_COLUMNS = (
    "model_version, parent_version, algorithm, training_mode, hyperparameters, seed, catalog_fingerprint, "
    "feature_fingerprint, catalog, trained_on, training_window_start, training_window_end, total_timesteps, "
    "train_seconds, response_model, evaluation, gate_decision, gate_reasons, is_champion, artifact, created_at"
)


def register(conn: Connection, record: ModelRecord) -> None:
    """Insert the model (not yet champion; the gate decides). The caller commits."""
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.policy_models (
                model_version, parent_version, algorithm, training_mode, hyperparameters, seed,
                catalog_fingerprint, feature_fingerprint, catalog, trained_on, training_window_start,
                training_window_end, total_timesteps, train_seconds, response_model, evaluation,
                artifact, artifact_sha256
            ) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                record.model_version,
                record.parent_version,
                record.algorithm,
                record.training_mode,
                Json(record.hyperparameters),
                record.seed,
                record.catalog_fingerprint,
                record.feature_fingerprint,
                Json(record.catalog),
                record.trained_on,
                record.training_window_start,
                record.training_window_end,
                record.total_timesteps,
                record.train_seconds,
                Json(_jsonable(record.response_model)),
                Json(_jsonable(record.evaluation)),
                record.artifact,
                record.artifact_sha256,
            ),
        )


def record_decision(
    conn: Connection,
    model_version: str,
    *,
    decision: GateVerdict,
    reasons: list[dict[str, Any]],
    evaluation: dict[str, Any],
) -> None:
    """Store the gate's decision; on `bootstrap` / `promoted` the model becomes the only champion."""
    with conn.cursor() as cur:
        # Serialise promotions: two trainings finishing together must not both win.
        cur.execute("lock table recsys.policy_models in share row exclusive mode")
        if decision in PROMOTED_VERDICTS:
            cur.execute("update recsys.policy_models set is_champion = false where is_champion")
        cur.execute(
            """
            update recsys.policy_models
            set gate_decision = %s, gate_reasons = %s, evaluation = evaluation || %s,
                is_champion = %s, promoted_at = case when %s then clock_timestamp() end
            where model_version = %s
            """,
            (
                decision,
                Json(_jsonable(reasons)),
                Json(_jsonable(evaluation)),
                decision in PROMOTED_VERDICTS,
                decision in PROMOTED_VERDICTS,
                model_version,
            ),
        )


def _row_to_record(row: dict[str, Any]) -> ModelRecord:
    row = dict(row)
    row["artifact"] = bytes(row["artifact"])
    return ModelRecord(**row)


def get_model(conn: Connection, model_version: str) -> ModelRecord:
    rows = fetch_all(
        conn,
        f"select {_COLUMNS} from recsys.policy_models where model_version = %s",  # noqa: S608 - fixed columns
        (model_version,),
    )
    if not rows:
        raise RecsysError(f"no model {model_version!r} in recsys.policy_models")
    return _row_to_record(rows[0])


def find_model(conn: Connection, model_version: str) -> ModelRecord | None:
    """The model of that version, or None."""
    try:
        return get_model(conn, model_version)
    except RecsysError:
        return None


def latest_model(conn: Connection, catalog: Catalog, *, algorithm: str = PPO) -> ModelRecord | None:
    """The newest registered model of `algorithm` for this catalog and the running feature set."""
    rows = fetch_all(
        conn,
        f"select {_COLUMNS} from recsys.policy_models where algorithm = %s and catalog_fingerprint = %s "  # noqa: S608
        "and feature_fingerprint = %s order by created_at desc, model_version desc limit 1",
        (algorithm, catalog.fingerprint(), feature_fingerprint()),
    )
    return _row_to_record(rows[0]) if rows else None


def champion(conn: Connection) -> ModelRecord | None:
    rows = fetch_all(
        conn,
        f"select {_COLUMNS} from recsys.policy_models where is_champion",  # noqa: S608 - fixed columns
    )
    return _row_to_record(rows[0]) if rows else None


def require_champion(conn: Connection) -> ModelRecord:
    record = champion(conn)
    if record is None:
        raise RecsysError("there is no champion model yet: train one first (`recsys train`)")
    return record


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON with numpy scalars and dates made plain."""

    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):
            return o.tolist()
        if isinstance(o, dt.date | dt.datetime):
            return o.isoformat()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    return json.loads(json.dumps(value, default=default, allow_nan=False))
