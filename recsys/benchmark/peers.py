"""Peers: the policies a data scientist would build instead of PPO, on the same logs and features.

Each peer learns from the logged offers the response model learns from (`load_logged_offers(...,
by="send", rests=False)`: every offer with the features the system had when it was sent and the
consent at the send; the rests, which sent nothing, are not responses to learn from) and
decides from the same observations scoring sees, so the benchmark can put it next to the champion
under the generator's truth (`bench/bench_policy.py`):

- `lightgbm direct method`: a LightGBM regression of the realised reward of each logged offer
  (`recsys.evaluation.model_eval.realised_reward`, the reward off-policy evaluation uses) on the user's
  features and the action's attributes (offer type, value, channel and timing one-hot); greedy.
- `lightgbm funnel`: LightGBM classifiers of P(open | sent), P(click | open), P(convert | click) and a
  regression of the order value of a conversion, on the same inputs; greedy on the expected reward of
  the reward rules (`recsys.config.reward`), the definition the truth values offers by:
  P(open) P(click | open) P(convert | click) (order value x (margin - percent off) - fee) - contact
  cost - unsubscribe penalty x P(open) P(unsubscribe | open). P(unsubscribe | open) is a classifier
  when the logs record unsubscribes, else the rules' prior rate of the channel.
- `vw cb_adf (dr)`: Vowpal Wabbit `--cb_adf --cb_type dr` (`recsys.benchmark.peers_vw`).

Fair chance: each model's hyper-parameters come from a small grid (`PeerConfig`), chosen by the
validation loss on held-out users (a user-grouped split; never by the truth); LightGBM's number of
rounds by early stopping on the same split. The chosen model is then refitted on every user. The
choices are reported (`FittedPeers.choices`). lightgbm and vowpalwabbit are not product dependencies
(bench/requirements-bench.txt): they are imported inside the functions that use them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.config.catalog import Catalog
from recsys.config.reward import RewardRules
from recsys.data.logged_offers import OfferLog
from recsys.evaluation.model_eval import realised_reward

DIRECT_ROW = "lightgbm direct method"
FUNNEL_ROW = "lightgbm funnel"
VW_ROW = "vw cb_adf (dr)"
PEER_PACKAGES = {"lightgbm": (DIRECT_ROW, FUNNEL_ROW), "vowpalwabbit": (VW_ROW,)}
"""Import name of each package and the rows it makes."""
INSTALL_HINT = "pip install --only-binary=:all: -r bench/requirements-bench.txt"
_SCORE_CHUNK_USERS = 2048


@dataclass(frozen=True)
class PeerConfig:
    """How the peers are fitted; the grids are pinned here, the choices among them are reported."""

    validation_fraction: float = 0.2
    """Share of the logged users held out to choose hyper-parameters (user-grouped split)."""
    seed: int = 0
    """Draws the held-out users, LightGBM's and VW's randomness and VW's extra actions."""
    lgbm_grid: tuple[tuple[int, int], ...] = ((7, 100), (31, 100), (31, 1000))
    """LightGBM (num_leaves, min_data_in_leaf) candidates, for every LightGBM model."""
    lgbm_learning_rate: float = 0.05
    """LightGBM shrinkage."""
    lgbm_max_rounds: int = 800
    """Upper bound on boosting rounds; early stopping on the held-out users picks the number."""
    lgbm_early_stopping: int = 40
    """Rounds without a better held-out loss before stopping."""
    vw_grid: tuple[str, ...] = ("-l 0.1 -q UA -q AA", "-l 0.5 -q UA -q AA", "-l 0.5 -q UA")
    """VW options besides `--cb_adf --cb_type dr`: learning rate and interactions (U user, A action)."""
    vw_other_actions: int = 7
    """Allowed actions drawn at random to go with each logged one in a VW training example."""
    min_stage_rows: int = 30
    """A funnel stage with fewer training rows (or no positive) uses the reward rules' prior instead."""


@dataclass
class PeerLogs:
    """The logged offers a peer learns from: usable rows only (features of the send day, a catalog
    action)."""

    user_id: np.ndarray  # int64 (n,)
    obs: np.ndarray  # float32 (n, N_FEATURES): the observation when the offer was sent
    mask: np.ndarray  # bool (n, n_actions): actions the user could receive then
    action: np.ndarray  # int64 (n,)
    propensity: np.ndarray  # float64 (n,), nan: unknown
    reward: np.ndarray  # float64 (n,): realised net value
    stages: dict[str, tuple[np.ndarray, np.ndarray]]  # stage -> (rows it learns from, 0/1 outcome)
    order_value: tuple[np.ndarray, np.ndarray]  # (converted rows with revenue, list value)

    @classmethod
    def of(cls, log: OfferLog, catalog: Catalog, rules: RewardRules) -> PeerLogs:
        rows = log.rows
        usable = rows["has_features"].to_numpy(dtype=bool, na_value=False) & (log.action_ids >= 0)
        reward = realised_reward(rows, rules)
        outcome = {
            c: rows[c].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan) if c in rows else None
            for c in ("opened", "clicked", "converted", "unsubscribed")
        }
        nan = np.full(len(rows), np.nan)
        opened, clicked, converted = (
            nan if outcome[c] is None else outcome[c] for c in ("opened", "clicked", "converted")
        )
        # Later stages imply earlier ones (a blocked open pixel): as the response model reads them.
        conv = converted == 1
        clk = (clicked == 1) | conv
        opn = (opened == 1) | clk
        stages = {
            "open": ((~np.isnan(opened) | clk) & usable, opn),
            "click": (opn & (~np.isnan(clicked) | conv) & usable, clk),
            "convert": (clk & ~np.isnan(converted) & usable, conv),
        }
        unsub = outcome["unsubscribed"]
        if unsub is not None:
            stages["unsubscribe"] = (opn & ~np.isnan(unsub) & usable, unsub == 1)
        percent = np.array([rules.offer_cost[a.offer_type].rule == "percent_of_order" for a in catalog.actions])
        value = rows["offer_value"].to_numpy(dtype=np.float64)
        share_paid = np.where(percent[np.maximum(log.action_ids, 0)], 1.0 - value / 100.0, 1.0)
        revenue = rows["revenue"].to_numpy(dtype=np.float64, na_value=np.nan)
        paid = conv & usable & (revenue > 0) & (share_paid > 0)
        list_value = np.divide(revenue, share_paid, out=np.zeros(len(rows)), where=paid)
        keep = np.flatnonzero(usable)
        return cls(
            user_id=rows["user_id"].to_numpy(dtype=np.int64)[keep],
            obs=np.asarray(log.obs, dtype=np.float32)[keep],
            mask=log.mask[keep],
            action=log.action_ids[keep],
            propensity=log.propensity[keep],
            reward=reward[keep],
            stages={k: (sel[keep], y[keep].astype(np.float64)) for k, (sel, y) in stages.items()},
            order_value=(paid[keep], list_value[keep]),
        )


def action_attributes(catalog: Catalog) -> tuple[np.ndarray, list[str]]:
    """Per catalog action, its attributes as model inputs: offer type, channel and timing one-hot and
    the value (float32 (n_actions, k)), with the column names."""
    groups = (("type", catalog.offer_types), ("channel", catalog.channels), ("timing", catalog.timings))
    names = [f"{g}:{item}" for g, items in groups for item in items] + ["value"]
    a = np.zeros((catalog.n_actions, len(names)), dtype=np.float32)
    for action in catalog.actions:
        for g, _ in groups:
            a[action.action_id, names.index(f"{g}:{getattr(action, _FIELD[g])}")] = 1.0
        a[action.action_id, -1] = float(action.value)
    return a, names


_FIELD = {"type": "offer_type", "channel": "channel", "timing": "timing"}


def user_split(user_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """bool (n,): the rows of a random `fraction` of the users (held out for validation)."""
    users = np.unique(user_id)
    n_held = max(1, round(fraction * len(users))) if len(users) > 1 else 0
    held = np.random.default_rng(seed).permutation(users)[:n_held]
    return np.isin(user_id, held)


def missing_packages() -> list[str]:
    """The peers' packages that are not installed."""
    return [name for name in PEER_PACKAGES if importlib.util.find_spec(name) is None]


# --- LightGBM ------------------------------------------------------------------------------------------


@dataclass
class _Booster:
    """A fitted LightGBM model and how it was chosen."""

    model: Any
    choice: dict[str, Any]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x, num_threads=1)


def _fit_lgbm(objective: str, x: np.ndarray, y: np.ndarray, held: np.ndarray, config: PeerConfig) -> _Booster:
    """The grid's best LightGBM model by held-out loss (rounds by early stopping), refitted on every row."""
    import lightgbm as lgb

    metric = "binary_logloss" if objective == "binary" else "l2"
    base = {
        "objective": objective,
        "metric": metric,
        "learning_rate": config.lgbm_learning_rate,
        "num_threads": 1,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    best: dict[str, Any] | None = None
    for leaves, min_leaf in config.lgbm_grid:
        params = base | {"num_leaves": leaves, "min_data_in_leaf": min_leaf}
        train_set = lgb.Dataset(x[~held], y[~held], free_raw_data=False)
        valid_set = lgb.Dataset(x[held], y[held], reference=train_set)
        model = lgb.train(
            params,
            train_set,
            num_boost_round=config.lgbm_max_rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(config.lgbm_early_stopping, verbose=False)],
        )
        loss = float(model.best_score["valid_0"][metric])
        if best is None or loss < best["validation_loss"]:
            rounds = max(1, model.best_iteration or config.lgbm_max_rounds)
            best = {"num_leaves": leaves, "min_data_in_leaf": min_leaf, "rounds": rounds, "validation_loss": loss}
    assert best is not None
    params = base | {"num_leaves": best["num_leaves"], "min_data_in_leaf": best["min_data_in_leaf"]}
    model = lgb.train(params, lgb.Dataset(x, y), num_boost_round=best["rounds"])
    return _Booster(model, best | {"rows": len(y), metric: round(best.pop("validation_loss"), 6)})


def _design(obs: np.ndarray, attributes: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Model inputs of (user, action) rows: the user's observation next to the action's attributes."""
    return np.hstack([np.asarray(obs, dtype=np.float32), attributes[action]])


def _grid_design(obs: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Model inputs of every (user, action) pair, users major: (len(obs) x n_actions, d)."""
    n, k = len(obs), len(attributes)
    return np.hstack([np.repeat(np.asarray(obs, dtype=np.float32), k, axis=0), np.tile(attributes, (n, 1))])


class GreedyPeer:
    """A peer as a `recsys.model.baselines.Policy`: probability 1 on the allowed action with the
    highest score of `score_matrix` (ties: the lowest id); all zeros on a row with no allowed action."""

    def __init__(self, name: str, catalog: Catalog, score_matrix: Any) -> None:
        self.name = name
        self.catalog = catalog
        self.score_matrix = score_matrix

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(obs), self.catalog.n_actions):
            raise ValueError(
                f"{self.name}: mask must have shape ({len(obs)}, {self.catalog.n_actions}), got {mask.shape}"
            )
        probs = np.zeros(mask.shape, dtype=np.float64)
        for lo in range(0, len(obs), _SCORE_CHUNK_USERS):
            sl = slice(lo, lo + _SCORE_CHUNK_USERS)
            scores = np.where(mask[sl], self.score_matrix(obs[sl]), -np.inf)
            rows = np.flatnonzero(mask[sl].any(axis=1))
            probs[lo + rows, scores[rows].argmax(axis=1)] = 1.0
        return probs


def fit_direct_method(logs: PeerLogs, catalog: Catalog, config: PeerConfig) -> tuple[GreedyPeer, dict[str, Any]]:
    """LightGBM regression of the realised reward on user x action inputs; greedy."""
    attributes, _ = action_attributes(catalog)
    held = user_split(logs.user_id, config.validation_fraction, config.seed)
    model = _fit_lgbm("regression", _design(logs.obs, attributes, logs.action), logs.reward, held, config)

    def scores(obs: np.ndarray) -> np.ndarray:
        return model.predict(_grid_design(obs, attributes)).reshape(len(obs), catalog.n_actions)

    return GreedyPeer(DIRECT_ROW, catalog, scores), {"reward": model.choice}


@dataclass
class FunnelModels:
    """The funnel's fitted stages (None: the rules' prior) and the reward rules that price them."""

    catalog: Catalog
    rules: RewardRules
    stages: dict[str, _Booster | None]
    order_value: _Booster | None
    attributes: np.ndarray
    choices: dict[str, Any] = field(default_factory=dict)

    def value_matrix(self, obs: np.ndarray) -> np.ndarray:
        """Expected net value (n, n_actions) of every action, by the reward rules' definition."""
        from recsys.model.response import basket_value

        x = _grid_design(obs, self.attributes)
        shape = (len(obs), self.catalog.n_actions)
        actions = self.catalog.actions
        rules = self.rules

        def stage(name: str, prior: np.ndarray) -> np.ndarray:
            model = self.stages.get(name)
            return np.broadcast_to(prior, shape) if model is None else model.predict(x).reshape(shape)

        p_open = stage("open", np.array([rules.open_rate[a.channel] for a in actions]))
        p_click = stage("click", np.array([rules.click_rate[a.channel] for a in actions]))
        p_convert = stage("convert", np.full(len(actions), rules.convert_rate))
        p_unsub = stage("unsubscribe", np.array([rules.unsubscribe_rate[a.channel] for a in actions]))
        if self.order_value is None:
            order_value = np.repeat(basket_value(obs, rules.default_order_value)[:, None], shape[1], axis=1)
        else:
            order_value = np.maximum(self.order_value.predict(x).reshape(shape), 0.0)
        cost = [rules.offer_cost[a.offer_type] for a in actions]
        percent = np.array(
            [a.value / 100 if c.rule == "percent_of_order" else 0.0 for a, c in zip(actions, cost, strict=True)]
        )
        fee = np.array([c.fee if c.rule == "fee_on_conversion" else 0.0 for c in cost])
        contact = np.array([rules.contact_cost[a.channel] for a in actions])
        net = order_value * (rules.margin_rate - percent) - fee
        return p_open * p_click * p_convert * net - contact - rules.unsubscribe_penalty * p_open * p_unsub


def fit_funnel(
    logs: PeerLogs, catalog: Catalog, rules: RewardRules, config: PeerConfig
) -> tuple[GreedyPeer, dict[str, Any]]:
    """LightGBM open / click / convert (/ unsubscribe) classifiers and an order-value regression; greedy
    on the expected reward of the reward rules."""
    attributes, _ = action_attributes(catalog)
    x = _design(logs.obs, attributes, logs.action)
    held = user_split(logs.user_id, config.validation_fraction, config.seed)
    stages: dict[str, _Booster | None] = {}
    choices: dict[str, Any] = {}
    for name in ("open", "click", "convert", "unsubscribe"):
        rows, y = logs.stages.get(name, (np.zeros(len(x), dtype=bool), np.zeros(len(x))))
        usable = rows.sum() >= config.min_stage_rows and y[rows].any() and held[rows].any() and (~held[rows]).any()
        stages[name] = _fit_lgbm("binary", x[rows], y[rows], held[rows], config) if usable else None
        choices[name] = stages[name].choice if stages[name] is not None else "the reward rules' prior"
    rows, list_value = logs.order_value
    order_value = None
    if rows.sum() >= config.min_stage_rows and held[rows].any() and (~held[rows]).any():
        order_value = _fit_lgbm("regression", x[rows], list_value[rows], held[rows], config)
    choices["order_value"] = order_value.choice if order_value is not None else "the user's basket"
    models = FunnelModels(catalog, rules, stages, order_value, attributes, choices)
    return GreedyPeer(FUNNEL_ROW, catalog, models.value_matrix), choices


# --- all peers -----------------------------------------------------------------------------------------


@dataclass
class FittedPeers:
    """The peers fitted on one night's logs, as policies by row name, and what was chosen for each."""

    policies: dict[str, Any]
    choices: dict[str, Any]
    skipped: dict[str, str]
    """Row name -> why it is missing (a package not installed)."""
    n_offers: int


def fit_peers(log: OfferLog, catalog: Catalog, rules: RewardRules, config: PeerConfig | None = None) -> FittedPeers:
    """Every peer whose package is installed, fitted on `log` (the offers `load_logged_offers(...,
    by="send")` returns for the night). Rows of a missing package are listed in `skipped`."""
    config = config or PeerConfig()
    logs = PeerLogs.of(log, catalog, rules)
    if len(logs.action) == 0:
        raise ValueError("no logged offer with the features of its send day and a catalog action: nothing to learn")
    missing = set(missing_packages())
    skipped = {
        row: f"{package} is not installed ({INSTALL_HINT})"
        for package, rows in PEER_PACKAGES.items()
        if package in missing
        for row in rows
    }
    policies: dict[str, Any] = {}
    choices: dict[str, Any] = {}
    if "lightgbm" not in missing:
        policies[DIRECT_ROW], choices[DIRECT_ROW] = fit_direct_method(logs, catalog, config)
        policies[FUNNEL_ROW], choices[FUNNEL_ROW] = fit_funnel(logs, catalog, rules, config)
    if "vowpalwabbit" not in missing:
        from recsys.benchmark.peers_vw import fit_vw

        policies[VW_ROW], choices[VW_ROW] = fit_vw(logs, catalog, config)
    return FittedPeers(policies, choices, skipped, len(logs.action))
