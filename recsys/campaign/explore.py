"""Exploration that earns information: which offer an explored user gets, with exact propensities.

A share `eps` (`[campaign] exploration_share`) of the offered users, drawn by a stable hash of
(exploration_salt, campaign date, user), get their offer from an exploration distribution q over
their allowed actions instead of the champion's greedy one. The logged propensity of the offer sent
is exact: P(a) = (1 - eps) [a == greedy] + eps q(a).

Two explorers (`[campaign] explorer`):

- `uniform`: q uniform over the allowed actions (the original behaviour, reproduced draw for draw).
- `softmax` (the default): q = (1 - floor) softmax(values / temperature) + floor uniform, over the
  allowed actions, where the values are the log-probabilities of the policy the system is trying to
  learn about. With temperature 1 the softmax part is that policy itself, so its importance weights
  on explored offers stay below 1 / (eps (1 - floor)) instead of growing with the catalog size
  (uniform: up to |A| / eps, 2,160 on 108 offers at 5%): off-policy evaluation of that policy
  rests on about eps x n logged decisions instead of eps x n / |A|. The floor keeps every allowed
  action possible, so any other policy (the rule heuristic, tomorrow's challenger) keeps support.

  Chosen over epsilon on the top-k plausible actions: the softmax is a smooth function of the
  policy (no cut-off to tune, no ties at the k-th action) and gives each action the probability
  the policy itself gives it, which is what bounds the weights; a top-k cut gives the actions just
  outside it only the floor.

The policy the values come from (`exploration_source`): the newest registered PPO model for the
catalog and feature set that is not the champion (the challenger the gate is waiting to judge),
else the champion when it is a PPO model, else none and q is uniform. A deterministic champion (the
rule heuristic) has no values to soften: its only action is already the greedy one.

`choose_explored` (and `choose_self_explored`, when the champion explores with itself) is pure
numpy on probabilities computed in batches; `exploration_source` reads the registry. Called by
`recsys.campaign.decide.decide_observed` and `recsys.campaign.score`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.campaign import hashing
from recsys.campaign.queries import campaign_sql
from recsys.config.catalog import Catalog
from recsys.config.rules import EXPLORERS, SOFTMAX, UNIFORM, CampaignRules
from recsys.db import Connection, fetch_value
from recsys.errors import RecsysError
from recsys.evaluation.registry import PPO, ModelRecord, champion, find_model, latest_model, load_policy
from recsys.model.baselines import Policy
from recsys.model.observation import feature_fingerprint

__all__ = [
    "EXPLORERS",
    "SOFTMAX",
    "UNIFORM",
    "Explorer",
    "choose_explored",
    "choose_self_explored",
    "exploration_source",
    "load_explorer",
    "resolve_explorer",
]
CHUNK = 16_384
"""Users per batch of the source policy's probabilities (n x n_actions float64 at a time)."""


@dataclass(frozen=True)
class Explorer:
    """What explored users draw from: `policy` None is the uniform explorer."""

    kind: str = UNIFORM
    """`uniform` or `softmax` (see the module docstring)."""
    temperature: float = 1.0
    """Softmax temperature on the source policy's log-probabilities: 1 is the policy itself,
    larger flattens it towards uniform."""
    floor: float = 0.1
    """Share of q spread uniformly over the allowed actions (support for every allowed action)."""
    policy: Policy | None = None
    """The policy whose values q softens (None: uniform)."""
    source: str = UNIFORM
    """The model version of `policy`, or `uniform`: recorded with the run."""

    @property
    def is_uniform(self) -> bool:
        return self.kind == UNIFORM or self.policy is None


def _softened(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / temperature) up to its normaliser: (p / max p)^(1 / temperature) per row (the
    largest is 1, so nothing underflows that matters); p itself at temperature 1."""
    if temperature == 1.0:
        return p
    top = p.max(axis=1, keepdims=True)
    return np.power(np.divide(p, top, out=np.zeros_like(p), where=top > 0), 1.0 / temperature)


def softmax_exploration(probs: np.ndarray, mask: np.ndarray, *, temperature: float, floor: float) -> np.ndarray:
    """q (n, n_actions) = (1 - floor) softmax(log probs / temperature) + floor uniform, on each row's
    allowed actions (0 elsewhere, all zeros where nothing is allowed).

    `probs` are a policy's probabilities on the same mask. A row whose softened mass underflows (or
    a policy that puts nothing on the allowed actions) is uniform.
    """
    mask = np.asarray(mask, dtype=bool)
    soft = _softened(np.where(mask, np.asarray(probs, dtype=np.float64), 0.0), temperature)
    n_allowed = mask.sum(axis=1, keepdims=True)
    uniform = np.divide(mask, n_allowed, out=np.zeros(mask.shape), where=n_allowed > 0)
    total = soft.sum(axis=1, keepdims=True)
    soft = np.divide(soft, total, out=uniform.copy(), where=total > 0)
    return (1.0 - floor) * soft + floor * uniform


def exploration_probability(
    probs: np.ndarray, mask: np.ndarray, actions: np.ndarray, *, temperature: float, floor: float
) -> np.ndarray:
    """q(actions[i]) of `softmax_exploration` per row, without building q (fewer passes over the
    (n, n_actions) matrix: what every offered user's propensity needs). 0 for action -1 or a
    disallowed one. `probs` must be 0 where the mask is false."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.arange(len(actions))
    a = np.maximum(actions, 0)
    allowed = (actions >= 0) & mask[rows, a]
    n_allowed = mask.sum(axis=1)
    soft = _softened(np.asarray(probs, dtype=np.float64), temperature)
    total = soft.sum(axis=1)
    uniform = np.divide(1.0, n_allowed, out=np.zeros(len(rows)), where=n_allowed > 0)
    share = np.divide(soft[rows, a], total, out=uniform.copy(), where=total > 0)
    return np.where(allowed, (1.0 - floor) * share + floor * uniform, 0.0)


def draw_from(q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The action with cumulative mass first reaching u (in [0, 1)) x the row's total: an inverse-CDF
    draw that never picks an action of probability 0. -1 where a row has no mass."""
    cumulative = np.cumsum(q, axis=1)
    target = (1.0 - u) * cumulative[:, -1]  # in (0, total]: the chosen action has positive mass
    action = np.minimum((cumulative < target[:, None]).sum(axis=1), q.shape[1] - 1).astype(np.int64)
    action[cumulative[:, -1] <= 0] = -1
    return action


def explore_draws(user_ids: np.ndarray, campaign_date: dt.date, rules: CampaignRules) -> tuple[np.ndarray, np.ndarray]:
    """(is explored, draw in [0, 1)) per user: the stable hashes of (salt, date, user), the same
    whichever explorer is configured, so a user is explored on the same nights under either."""
    day = campaign_date.isoformat()
    explore = hashing.uniform(user_ids, rules.exploration_salt, day, "explore") < rules.exploration_share
    draw = hashing.uniform(user_ids, rules.exploration_salt, day, "draw")
    return explore, draw


def choose_explored(
    greedy: np.ndarray,
    obs: np.ndarray,
    mask: np.ndarray,
    user_ids: np.ndarray,
    campaign_date: dt.date,
    rules: CampaignRules,
    explorer: Explorer,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The softmax explorer's mixture: (action, propensity, is_exploration) per user.

    An explored user's action is drawn from q (`softmax_exploration` of `explorer.policy`'s
    probabilities on `obs`, `mask`); the propensity of the action logged is
    (1 - eps) [action == greedy] + eps q(action), exact under the hash draws. The policy's
    probabilities are computed in batches of CHUNK users.
    """
    policy = _policy_of(explorer)
    mask = np.asarray(mask, dtype=bool)
    greedy = np.asarray(greedy, dtype=np.int64)
    chunks = (
        (lo, policy.probabilities(obs[lo : lo + CHUNK], mask[lo : lo + CHUNK])) for lo in range(0, len(mask), CHUNK)
    )
    return _explore(greedy, chunks, mask, user_ids, campaign_date, rules, explorer)


def choose_self_explored(
    obs: np.ndarray,
    mask: np.ndarray,
    user_ids: np.ndarray,
    campaign_date: dt.date,
    rules: CampaignRules,
    explorer: Explorer,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`choose_explored` when the explorer's policy is also the one whose greedy action is logged
    (the champion explores with itself): (greedy, action, propensity, is_exploration). The greedy
    actions come from the same forward pass as the probabilities (the policy's
    `act_with_probabilities`, CHUNK users at a time): one pass over the network instead of two."""
    policy = _policy_of(explorer)
    fused = getattr(policy, "act_with_probabilities", None)
    if not callable(fused):
        raise ValueError(f"policy {policy.name!r} has no act_with_probabilities: use choose_explored")
    mask = np.asarray(mask, dtype=bool)
    greedy = np.empty(len(mask), dtype=np.int64)
    chunks = _with_greedy(fused(obs, mask, CHUNK), greedy)
    return (greedy, *_explore(greedy, chunks, mask, user_ids, campaign_date, rules, explorer))


def _policy_of(explorer: Explorer) -> Policy:
    if explorer.policy is None:
        raise ValueError("choose_explored needs an explorer with a policy (use choose_actions for uniform)")
    return explorer.policy


def _explore(
    greedy: np.ndarray,
    chunks: Iterator[tuple[int, np.ndarray]],
    mask: np.ndarray,
    user_ids: np.ndarray,
    campaign_date: dt.date,
    rules: CampaignRules,
    explorer: Explorer,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mixture on the explorer's probabilities, chunk by chunk (start row, probabilities);
    `greedy` of a chunk is read only once the chunk has arrived."""
    eps = rules.exploration_share
    explore, draw = explore_draws(user_ids, campaign_date, rules)
    explore &= mask.any(axis=1)
    action = np.empty(len(mask), dtype=np.int64)
    q_logged = np.zeros(len(action))
    for lo, p in chunks:
        sl = slice(lo, lo + len(p))
        action[sl] = greedy[sl]
        probs = np.asarray(p, dtype=np.float64)
        probs *= mask[sl]  # exactness does not rest on the policy keeping its protocol
        rows = np.flatnonzero(explore[sl])
        if len(rows):
            q = softmax_exploration(probs[rows], mask[sl][rows], temperature=explorer.temperature, floor=explorer.floor)
            action[lo + rows] = draw_from(q, draw[sl][rows])
        q_logged[sl] = exploration_probability(
            probs, mask[sl], action[sl], temperature=explorer.temperature, floor=explorer.floor
        )
    propensity = (1.0 - eps) * (action == greedy) + eps * q_logged
    return action, propensity, explore


def _with_greedy(
    chunks: Iterator[tuple[int, np.ndarray, np.ndarray]], greedy: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, probabilities) per chunk of `act_with_probabilities`, its greedy actions
    written into `greedy` on the way."""
    for lo, actions, probs in chunks:
        greedy[lo : lo + len(actions)] = actions
        yield lo, probs


def exploration_source(conn: Connection, catalog: Catalog, rules: CampaignRules) -> ModelRecord | None:
    """The registered model whose values the softmax explorer softens: the newest PPO model of this
    catalog and feature set that is not the champion, else the champion when it is PPO, else None
    (uniform). Always None for the uniform explorer, and without exploration (share 0)."""
    if rules.explorer == UNIFORM or rules.exploration_share == 0:
        return None
    newest = latest_model(conn, catalog, algorithm=PPO)
    if newest is not None and not newest.is_champion:
        return newest
    current = champion(conn)
    if (
        current is not None
        and current.algorithm.upper() == PPO
        and current.catalog_fingerprint == catalog.fingerprint()
        and current.feature_fingerprint == feature_fingerprint()
    ):
        return current
    return None


def resolve_explorer(
    conn: Connection, sql_dir: Path, run_id: str, catalog: Catalog, rules: CampaignRules
) -> ModelRecord | None:
    """The exploration source of a run: the one it recorded when its first shard started (so every
    shard, and a re-run, explores the same way), else `exploration_source` now. None: uniform."""
    recorded = fetch_value(conn, campaign_sql(sql_dir, "resolve_run_explorer"), {"run_id": run_id})
    if recorded is None:
        return exploration_source(conn, catalog, rules)
    if recorded == UNIFORM:
        return None
    record = find_model(conn, recorded)
    if record is None:
        raise RecsysError(
            f"run {run_id!r} explores with model {recorded!r}, which is no longer in recsys.policy_models: "
            "score the date again under a new run id"
        )
    return record


def load_explorer(
    record: ModelRecord | None, catalog: Catalog, rules: CampaignRules, policy: Policy | None = None
) -> Explorer:
    """The `Explorer` of the rules with the policy of `record` (None: uniform). Loads the model
    (torch for a PPO model) unless `policy`, that record's policy already loaded (the champion
    exploring with itself), is given: call it once per run or shard."""
    if record is not None and policy is None:
        policy = load_policy(record, catalog)
    return Explorer(
        kind=rules.explorer,
        temperature=rules.exploration_temperature,
        floor=rules.exploration_floor,
        policy=policy if record is not None else None,
        source=record.model_version if record is not None else UNIFORM,
    )
