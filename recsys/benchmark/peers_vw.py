"""Vowpal Wabbit `--cb_adf --cb_type dr` as a benchmark peer (`recsys.benchmark.peers`), greedy.

Each logged offer is one contextual-bandit example: a shared line with the user's observation when the
offer was sent (namespace U) and one line per action with its attributes (namespace A: offer type,
channel, timing, type x value), the logged action labelled with its cost (minus the realised reward)
and its logged propensity. Offers with an unknown propensity are left out. With doubly robust costs
every action but the logged one gets the model's own prediction as its cost, so only the logged
action moves the regression: each example carries it and `vw_other_actions` other allowed actions
drawn at random, not all of them (the same update, a fraction of the parsing).

The options (learning rate, interactions) come from `PeerConfig.vw_grid`, chosen by the squared error
of the predicted cost of the logged action on held-out users; the chosen model is refitted on every
user. VW's Python API takes one example per call, so learning and scoring loop over examples here:
this is a benchmark peer, not a product path. Imported only when vowpalwabbit is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.benchmark.peers import VW_ROW, GreedyPeer, PeerConfig, PeerLogs, user_split
from recsys.config.catalog import Catalog


def shared_lines(obs: np.ndarray) -> np.ndarray:
    """The shared line of each user: `shared |U f0:<value> f1:<value> ...` (object (n,))."""
    import pandas as pd

    frame = pd.DataFrame(np.round(np.asarray(obs, dtype=np.float64), 4))
    line = pd.Series("shared |U", index=frame.index)
    for j in frame.columns:
        line = line + f" f{j}:" + frame[j].astype(str)
    return line.to_numpy(dtype=object)


def action_lines(catalog: Catalog) -> list[str]:
    """The line of each catalog action, in action id order."""
    return [
        f"|A t_{a.offer_type} c_{a.channel} m_{a.timing} "
        f"v_{a.offer_type}:{a.value / 10:g} tv_{a.offer_type}_{a.value:g}"
        for a in catalog.actions
    ]


def _other_actions(mask: np.ndarray, logged: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, up to `k` allowed actions other than the logged one, drawn at random (-1: none)."""
    keys = rng.random(mask.shape)
    keys[~mask] = np.inf
    keys[np.arange(len(logged)), logged] = np.inf
    k = min(k, mask.shape[1])
    order = np.argsort(keys, axis=1)[:, :k]
    return np.where(np.isfinite(np.take_along_axis(keys, order, axis=1)), order, -1)


def _train(options: str, shared: np.ndarray, logs: PeerLogs, rows: np.ndarray, others: np.ndarray, lines: list[str]):
    """A VW workspace trained, one pass, on the logged offers `rows` (indices, in log order)."""
    import vowpalwabbit

    ws = vowpalwabbit.Workspace(f"--cb_adf --cb_type dr {options} --quiet --random_seed 0")
    cost = -logs.reward
    for i in rows:
        example = [shared[i], f"0:{cost[i]:.6g}:{logs.propensity[i]:.6g} {lines[logs.action[i]]}"]
        example += [lines[a] for a in others[i] if a >= 0]
        ws.learn(example)
    return ws


def fit_vw(logs: PeerLogs, catalog: Catalog, config: PeerConfig) -> tuple[GreedyPeer, dict[str, Any]]:
    """The grid's best VW cb_adf (DR) model by held-out squared error, refitted on every user; greedy."""
    known = np.isfinite(logs.propensity) & (logs.propensity > 0)
    shared = shared_lines(logs.obs)
    lines = action_lines(catalog)
    others = _other_actions(logs.mask, logs.action, config.vw_other_actions, np.random.default_rng(config.seed))
    held = user_split(logs.user_id, config.validation_fraction, config.seed)
    train_rows, held_rows = np.flatnonzero(known & ~held), np.flatnonzero(known & held)
    best: dict[str, Any] | None = None
    for options in config.vw_grid:
        ws = _train(options, shared, logs, train_rows, others, lines)
        predicted = np.array([ws.predict([shared[i], lines[logs.action[i]]])[0] for i in held_rows])
        loss = float(np.mean((predicted + logs.reward[held_rows]) ** 2)) if len(held_rows) else float("nan")
        ws.finish()
        if best is None or loss < best["validation_mse"]:
            best = {"options": options, "validation_mse": loss}
    assert best is not None
    ws = _train(best["options"], shared, logs, np.flatnonzero(known), others, lines)

    def scores(obs: np.ndarray) -> np.ndarray:
        users = shared_lines(obs)
        return -np.array([ws.predict([u, *lines]) for u in users], dtype=np.float64).reshape(len(obs), len(lines))

    choice = best | {"validation_mse": round(best["validation_mse"], 6), "rows": int(known.sum())}
    return GreedyPeer(VW_ROW, catalog, scores), {"cost": choice}
