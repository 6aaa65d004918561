"""Model-based evidence over the conservative baseline: how sure the response model is that the
challenger beats the rule heuristic on tonight's users.

Both policies choose once (greedy, tonight's states, the simulator check's users); each response
model (the night's, then every bootstrap refit of `recsys.model.response_refit.BootstrapSample`)
only revalues those choices. The gate (`recsys.evaluation.gate`, evidence path b) reads the spread
of the refits' differences. Called by `recsys.evaluation.challenger.evaluate_challenger`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from recsys.config.catalog import Catalog
from recsys.evaluation.results import ModelEvidence
from recsys.model.baselines import Policy, greedy_actions
from recsys.model.observation import States
from recsys.model.response import ResponseModel


def model_evidence(
    challenger: Policy,
    baseline: Policy,
    *,
    states: States,
    catalog: Catalog,
    response: ResponseModel,
    refits: Iterable[ResponseModel],
    training_offers: int | None = None,
) -> ModelEvidence:
    """Mean expected reward per user of the challenger's greedy offer minus the baseline's, on
    `states`, under `response` and under each model of `refits` (fitted as they are consumed, so
    `seconds` counts the refits too). Users without an allowed offer count 0 for both.
    `training_offers`: how many logged offers the night's fit trained on, recorded for the gate."""
    started = time.perf_counter()
    n = len(states)
    if n == 0:
        return ModelEvidence(0.0, (), 0.0, training_offers)
    mask = states.action_mask(catalog)
    ours, _ = greedy_actions(challenger, states.obs, mask)
    theirs, _ = greedy_actions(baseline, states.obs, mask)
    # Only the users the two policies treat differently move the difference.
    rows = np.flatnonzero(ours != theirs)
    obs, mine, other = states.obs[rows], ours[rows], theirs[rows]

    def difference(model: ResponseModel) -> float:
        return float((_values(model, obs, mine) - _values(model, obs, other)).sum() / n)

    night = difference(response)
    refitted = tuple(difference(model) for model in refits)
    return ModelEvidence(night, refitted, time.perf_counter() - started, training_offers)


def _values(model: ResponseModel, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Expected reward of each row's action (0 where there is none: action -1)."""
    out = np.zeros(len(actions))
    has = actions >= 0
    if has.any():
        out[has] = model.expected_reward(obs[has], actions[has])
    return out


__all__ = ["model_evidence"]
