"""`recsys recommend`: the original project's sample output for one user.

Reads the user's latest features (or as of a given date), runs the model through the batch
policy API with the user's allowed channels, and prints the state features with units and the
recommended offer in words, with the policy's probability for it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.config.catalog import Catalog
from recsys.data.states import load_states
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import get_model, load_policy, require_champion
from recsys.model.baselines import Policy, choose


@dataclass(frozen=True)
class Recommendation:
    user_id: int
    as_of: dt.date
    features: dict[str, float]
    action_id: int | None
    description: str
    probability: float
    model: str

    def format(self) -> str:
        f = self.features
        channels = {
            "email": f["email_responsiveness"],
            "sms": f["sms_responsiveness"],
            "push": f["push_responsiveness"],
        }
        lines = [
            f"Recommendation for User {self.user_id}:",
            f"State Features (as of {self.as_of}):",
            f"- Recency: {f['recency_days']:.2f} days",
            f"- Frequency: {int(f['frequency_sessions'])} sessions",
            f"- Monetary Value: ${f['monetary_value']:,.2f}",
            f"- Engagement Score: {f['engagement_score']:.2f}",
            f"- Discount Sensitive: {'Yes' if f['discount_sensitivity'] > 0.5 else 'No'}",
            f"- Free Shipping Preference: {f['free_shipping_preference']:.2f}",
            f"- Preferred Channel: {max(channels, key=channels.__getitem__)}",
            f"- Days Since Last Purchase: {f['days_since_last_purchase']:.1f}",
            "",
            "Recommended Action:",
            self.description,
        ]
        if self.action_id is not None:
            lines.append(f"(action {self.action_id}, probability {self.probability:.1%} under model {self.model})")
        return "\n".join(lines)


def _load_model(conn: Connection, model: str | None, catalog: Catalog) -> tuple[Policy, str]:
    """The champion, a registered model version, or an SB3 zip file (`recsys train --save`)."""
    if model is None:
        record = require_champion(conn)
        record.check_compatible(catalog)
        return load_policy(record, catalog), record.model_version
    path = Path(model)
    candidates = [path, path.with_name(path.name + ".zip")] if path.suffix != ".zip" else [path]
    for candidate in candidates:
        if candidate.is_file():
            from recsys.model.policy import PPOPolicy

            return PPOPolicy.from_file(candidate, catalog), str(candidate)
    if path.suffix in ("", ".zip") and "/" not in model:
        try:
            record = get_model(conn, model)
        except RecsysError:
            pass
        else:
            record.check_compatible(catalog)
            return load_policy(record, catalog), record.model_version
    raise RecsysError(f"no model file {model!r} (nor a registered model version of that name)")


def recommend(
    conn: Connection, catalog: Catalog, *, user_id: int, model: str | None = None, as_of: dt.date | None = None
) -> Recommendation:
    """The offer `model` (the champion by default) makes to one user with features as of `as_of`
    (their latest by default), from `catalog`."""
    policy, model_name = _load_model(conn, model, catalog)
    if as_of is None:
        as_of = fetch_value(conn, "select max(as_of) from recsys.user_features where user_id = %s", (user_id,))
        if as_of is None:
            raise RecsysError(f"user {user_id} has no features: unknown user, or `recsys features` has not run")
    states = load_states(conn, as_of, np.array([user_id]))
    if len(states) == 0:
        raise RecsysError(f"user {user_id} has no features as of {as_of}")
    mask = states.action_mask(catalog)
    actions, probs = choose(policy, states.obs, mask)
    raw = dict(zip(_names(), states.raw[0], strict=True))
    if actions[0] < 0:
        return Recommendation(
            user_id, as_of, raw, None, "No offer: the user consents to no channel we can reach.", 0.0, model_name
        )
    action = catalog.actions[int(actions[0])]
    return Recommendation(
        user_id, as_of, raw, action.action_id, action.describe(catalog.value_units.get(action.offer_type, "")),
        float(probs[0]), model_name,
    )  # fmt: skip


def _names() -> list[str]:
    from recsys.model.observation import FEATURE_NAMES

    return list(FEATURE_NAMES)
