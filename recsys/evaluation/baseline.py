"""The conservative baseline: the rule heuristic, the champion a catalog starts with.

A new shop has few logs, and a model trained on them can be worse than a one-line rule (issue 12:
on the 2,000-user demo shop a first PPO champion was worth 0.080 normalised under the truth, the
rule 0.121). So training (`recsys.orchestration.train`) calls `crown_baseline` when there is no
champion for the running catalog: the rule heuristic (`recsys.model.baselines.RuleHeuristicPolicy`)
is registered as a model of its own (algorithm `rule_heuristic`, no artifact) and crowned
(`bootstrap`). Every challenger is then judged against it (`recsys.evaluation.gate`): it replaces
the rule only on evidence that it is better, from the logs (the paired doubly robust difference) or
from the response model's bootstrap refits, when the logs do not contradict them.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from recsys.config.catalog import Catalog
from recsys.db import Connection
from recsys.evaluation.challenger import evaluate_challenger
from recsys.evaluation.registry import (
    ModelRecord,
    find_model,
    record_decision,
    register,
    rule_heuristic_record,
)
from recsys.evaluation.results import GateCheck, GateDecision
from recsys.model.baselines import Policy, RuleHeuristicPolicy
from recsys.model.observation import States
from recsys.model.response import ResponseModel

if TYPE_CHECKING:
    from recsys.model.contact_rules import ContactRules

BOOTSTRAP_CHECK = "conservative baseline first"


def conservative_baseline(catalog: Catalog) -> tuple[str, Policy] | None:
    """(model version, policy) of the catalog's rule heuristic; None when the catalog lacks the
    offers the rule needs (discount, free shipping, recommendation): then there is no baseline and
    the gate judges challengers as before it existed."""
    try:
        policy = RuleHeuristicPolicy(catalog)
    except ValueError:
        return None
    version = rule_heuristic_record(catalog, as_of=dt.date.min, response_model={}).model_version
    policy.name = version
    return version, policy


def crown_baseline(
    conn: Connection,
    catalog: Catalog,
    *,
    as_of: dt.date,
    states: States,
    response: ResponseModel,
    seed: int,
    reason: str,
    max_decisions: int | None = None,
    contact_rules: ContactRules | None = None,
) -> tuple[ModelRecord, GateDecision] | None:
    """Register (once per catalog and feature set) and crown the catalog's rule heuristic, with
    verdict `bootstrap`; evaluated like a challenger (simulator and logs) for the leaderboard.
    `reason` says why there was no champion; `max_decisions` bounds the logged decisions its
    off-policy estimates read and `contact_rules` the caps of its rollouts (`evaluate_challenger`).
    Commits. None when the catalog cannot express the rule."""
    baseline = conservative_baseline(catalog)
    if baseline is None:
        return None
    version, policy = baseline
    record = find_model(conn, version)
    if record is None:
        record = rule_heuristic_record(catalog, as_of=as_of, response_model=response.to_dict())
        evaluation = evaluate_challenger(
            conn,
            policy,
            as_of=as_of,
            states=states,
            response=response,
            catalog=catalog,
            current=None,
            seed=seed,
            max_decisions=max_decisions,
            contact_rules=contact_rules,
        )
        record.evaluation = evaluation.to_json()
        register(conn, record)
    decision = GateDecision(
        "bootstrap",
        (
            GateCheck(
                BOOTSTRAP_CHECK,
                True,
                f"{reason}: the rule heuristic is the conservative baseline and becomes the champion; "
                "a trained model replaces it only on evidence that it is better: the logs' paired doubly robust lower "
                "bound > 0, or the response model's bootstrap refits, not contradicted by the logs",
            ),
        ),
    )
    record_decision(
        conn, version, decision=decision.decision, reasons=decision.reasons_json(), evaluation=record.evaluation
    )
    conn.commit()
    record.gate_decision, record.is_champion = decision.decision, True
    return record, decision
