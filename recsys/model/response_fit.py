"""Fitting the response model (`recsys.model.response`) to logged offers, and its held-out report.

`fit_response_model_to_logs` takes the logged offers as arrays (`LoggedOffers`, loaded by
`recsys.data.logged_offers`), holds out a random share of users, fits each stage head by maximum a
posteriori logistic regression around the business-rule priors and the order value by ridge
regression toward the user's basket, and reports the held-out log loss and calibration of the fitted
model next to the prior's (`format_fit_report` prints it). Pure numpy/torch, no database.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np

from recsys.config.catalog import Catalog
from recsys.config.learning import FitConfig
from recsys.config.reward import RewardRules
from recsys.model.fit_sample import LoggedOffers, bounded_sample
from recsys.model.response import (
    HeadParams,
    ResponseModel,
    _prior_params,
    _sigmoid,
    basket_value,
    check_rules_cover,
)
from recsys.model.response_terms import (
    _DESIGN_IDX,
    DESIGN_FEATURES,
    PRIOR_SHRUNK_DESIGN,
    STAGES,
    _Attributes,
    _masks,
    preference_features,
)


@dataclass(frozen=True)
class FitRequest:
    """One fit of the response model: what it fits and how; checked when made, before any data is read."""

    catalog: Catalog
    """The offers the model values."""
    rules: RewardRules
    """The business rules: the priors, and the reward of each outcome."""
    as_of: date
    """The night: the model learns from the offers logged before its 00:00 UTC."""
    holdout_fraction: float = 0.2
    """Share of the users held out for the report, in [0, 1)."""
    seed: int = 0
    """Draws the held-out users."""
    config: FitConfig = field(default_factory=FitConfig)
    """The hyperparameters."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        check_rules_cover(self.catalog, self.rules)


def fit_response_model_to_logs(
    logs: LoggedOffers, request: FitRequest, *, prepared: dict[str, float] | None = None
) -> ResponseModel:
    """Fit the response model to `logs`, the offers logged before `request.as_of` (00:00 UTC) with
    the features the system had when each was sent (`recsys.data.logged_offers` loads them).

    A random `holdout_fraction` of users (by `seed`) is held out: the model is fitted on the others
    and its held-out log loss and calibration of P(open), P(click) and P(convert) are reported next
    to the prior's in `fit_report`. The returned model is then refitted on every user's offers
    (`FitConfig.refit_on_all`, warm-started from the training users' fit): the report describes
    how the training users' model did on users it never saw; the night's model learns from all.
    `prepared` carries what loading took (`feature_dates_built`, `build_seconds`, `load_seconds`,
    and `read_rate` when the read was a database sample: `recsys.data.logged_offers`) into the report.
    """
    catalog, rules, as_of, config = request.catalog, request.rules, request.as_of, request.config
    holdout_fraction, seed = request.holdout_fraction, request.seed
    prepared = prepared or {}
    built_seconds = float(prepared.get("build_seconds", 0.0))
    load_seconds = float(prepared.get("load_seconds", 0.0))
    started = time.perf_counter() - built_seconds - load_seconds

    attrs = _Attributes.of(catalog)
    prior = _prior_params(catalog, rules, attrs)
    report: dict[str, Any] = {
        "kind": "fitted",
        "as_of": as_of.isoformat(),
        "seed": seed,
        "holdout_fraction": holdout_fraction,
        "config": asdict(config),
        "offers": logs.counts,
        "window": logs.window,
        "feature_dates_built": int(prepared.get("feature_dates_built", 0)),
    }
    usable = logs.usable
    if not usable.any():
        report["kind"] = "prior"
        report["reason"] = "no logged offers with point-in-time features before as_of"
        return ResponseModel(catalog, rules, prior, report)

    logs, report["sample"] = bounded_sample(
        logs, as_of, max_offers=config.max_offers, recent_days=config.recent_days, seed=seed
    )
    if float(prepared.get("read_rate", 1.0)) < 1.0:  # the read was itself a sample of the older offers
        report["sample"]["read_rate"] = float(prepared["read_rate"])
    x_all = logs.obs[:, _DESIGN_IDX]
    a_all = attrs.rows(catalog, rules, logs.type_idx, logs.value, logs.channel_idx, logs.timing_idx)
    train, held, n_users, n_holdout = _split_users(logs.user_id, logs.usable, holdout_fraction, seed)
    report["offers"] |= {
        "train": int(train.sum()),
        "holdout": int(held.sum()),
        "users_train": n_users - n_holdout,
        "users_holdout": n_holdout,
    }

    targets = _stage_targets(logs)
    fit_started = time.perf_counter()
    params, report["heads"] = _fit_heads(logs, x_all, a_all, train, targets, prior, catalog, rules, attrs, config)
    report["seconds"] = {
        "build_features": round(built_seconds, 3),
        "load": round(load_seconds, 3),
        "fit": round(time.perf_counter() - fit_started, 3),
    }
    if n_holdout >= config.min_holdout_users and held.any():
        report["holdout"] = _holdout_report(x_all, a_all, held, targets, prior, params, config)
    if config.refit_on_all and held.any():
        refit_started = time.perf_counter()
        everyone = train | held
        params, report["heads"] = _fit_heads(
            logs, x_all, a_all, everyone, targets, prior, catalog, rules, attrs, config, start=params
        )
        report["offers"]["final_fit"] = int(everyone.sum())
        report["seconds"]["refit"] = round(time.perf_counter() - refit_started, 3)
    else:
        report["offers"]["final_fit"] = int(train.sum())
    report["seconds"]["total"] = round(time.perf_counter() - started, 3)
    return ResponseModel(catalog, rules, params, _json_safe(report))


def _split_users(
    user_id: np.ndarray, usable: np.ndarray, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Training and held-out rows: a random `holdout_fraction` of the users of the usable offers
    (by `seed`) is held out. Also returns the number of those users and of the held-out ones."""
    users = np.unique(user_id[usable])
    rng = np.random.default_rng(seed)
    n_holdout = round(holdout_fraction * len(users))
    held_users = rng.permutation(users)[:n_holdout]
    held = np.isin(user_id, held_users) & usable
    return usable & ~held, held, len(users), n_holdout


def _fit_heads(
    logs: LoggedOffers,
    x: np.ndarray,
    a: np.ndarray,
    train: np.ndarray,
    targets: dict[str, tuple[np.ndarray, np.ndarray]],
    prior: dict[str, HeadParams],
    catalog: Catalog,
    rules: RewardRules,
    attrs: _Attributes,
    config: FitConfig,
    *,
    start: dict[str, HeadParams] | None = None,
) -> tuple[dict[str, HeadParams], dict[str, Any]]:
    """Every head fitted on the training rows (a stage without outcomes or rows keeps its prior),
    with what each fit did. `start`: coefficients the optimiser starts from (the prior otherwise);
    the Gaussian prior stays centred on `prior` either way, so the optimum is the same."""
    params = {h: p.copy() for h, p in prior.items()}
    heads_report: dict[str, Any] = {}
    weight = logs.weights()
    for head in STAGES:
        rows, y = targets.get(head, (None, None))
        if rows is None:
            heads_report[head] = {"fitted": False, "reason": f"the logs have no {head} outcome; the prior is kept"}
            continue
        sel = rows & train
        if not sel.any():
            heads_report[head] = {"fitted": False, "reason": "no training rows; the prior is kept"}
            continue
        params[head], info = _fit_logistic(
            x[sel],
            a[sel],
            y[sel],
            weight[sel],
            prior[head],
            _masks(attrs, head, preference_features(rules)),
            config,
            start=None if start is None else start[head],
        )
        heads_report[head] = {"fitted": True, "rows": int(sel.sum()), "positives": int(y[sel].sum()), **info}
    params["order_value"], heads_report["order_value"] = _fit_order_value(
        logs, x, a, train, targets, catalog, rules, attrs, config
    )
    return params, heads_report


def _stage_targets(logs: LoggedOffers) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per stage: which offers it learns from, and the outcome (1.0 / 0.0).

    Later stages imply earlier ones (a click without a recorded open happens when an email client
    blocks the open pixel): opened = opened or clicked or converted, clicked = clicked or converted.
    """
    out = logs.outcomes
    n = len(logs.user_id)
    nan = np.full(n, np.nan)
    opened, clicked, converted = (out.get(c, nan) for c in ("opened", "clicked", "converted"))
    conv = converted == 1
    clk = (clicked == 1) | conv
    opn = (opened == 1) | clk
    targets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if "opened" in out:
        targets["open"] = (~np.isnan(opened) | clk, opn.astype(np.float64))
    if "clicked" in out:
        targets["click"] = (opn & (~np.isnan(clicked) | conv), clk.astype(np.float64))
    if "converted" in out:
        targets["convert"] = (clk & ~np.isnan(converted), conv.astype(np.float64))
    if "unsubscribed" in out:
        unsub = out["unsubscribed"]
        targets["unsubscribe"] = (opn & ~np.isnan(unsub), (unsub == 1).astype(np.float64))
    return targets


def _fit_logistic(
    x: np.ndarray,
    a: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    prior: HeadParams,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: FitConfig,
    *,
    start: HeadParams | None = None,
) -> tuple[HeadParams, dict[str, Any]]:
    """MAP logistic regression of one head, Gaussian prior around `prior`, by damped Newton steps
    starting from `start` (the prior when None).

    The head's existing terms become the columns of one design matrix (features, attributes, and
    attribute x feature products). Each row's log-likelihood counts `weight` times (a bounded
    sample's inverse sampling rate). The objective (weighted log-loss plus the prior's penalty,
    per unit of weight) is strictly convex, so Newton's method with a backtracking line search
    reaches its one minimum; each step costs one weighted cross-product of the design (a
    matrix-matrix product: a few hundred columns at most). It stops when the Newton decrement
    says the objective is within `config.tolerance` of its minimum, or after `config.max_iter`
    steps.
    """
    mw, mg, md = (m.astype(bool) for m in masks)
    rows_d, cols_d = np.nonzero(md)
    design = np.hstack([x[:, mw], a[:, mg], a[:, rows_d] * x[:, cols_d]])
    theta0 = np.concatenate([prior.w[mw], prior.gamma[mg], prior.D[rows_d, cols_d]])
    init = start or prior
    theta = np.concatenate([init.w[mw], init.gamma[mg], init.D[rows_d, cols_d]])
    shrunk = PRIOR_SHRUNK_DESIGN
    precision = np.concatenate(
        [
            np.where(shrunk[mw], config.l2_prior_shrunk, config.l2_main),
            np.full(mg.sum(), config.l2_main),
            np.where(shrunk[cols_d], config.l2_prior_shrunk, config.l2_interaction),
        ]
    )
    y = np.asarray(y, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    n = float(weight.sum())

    def objective(t: np.ndarray, z: np.ndarray | None = None) -> float:
        z = design @ t if z is None else z
        nll = float(weight @ (np.logaddexp(0.0, z) - y * z))
        return (nll + 0.5 * float(precision @ (t - theta0) ** 2)) / n

    z = design @ theta
    value = objective(theta, z)
    iterations = 0
    for iterations in range(1, config.max_iter + 1):  # noqa: B007 (the count is reported)
        p = _sigmoid_stable(z)
        gradient = (design.T @ (weight * (p - y)) + precision * (theta - theta0)) / n
        curvature = weight * p * (1.0 - p)
        hessian = (design.T @ (design * curvature[:, None])) / n
        hessian[np.diag_indices_from(hessian)] += precision / n
        step = _solve_spd(hessian, gradient)
        decrement = float(gradient @ step)  # the Newton decrement squared: 2 x the predicted decrease
        if decrement / 2.0 <= config.tolerance:
            break
        size = 1.0
        while True:  # backtracking (Armijo): a full step near the optimum, shorter far from it
            candidate = theta - size * step
            z_candidate = design @ candidate
            new_value = objective(candidate, z_candidate)
            if new_value <= value - 1e-4 * size * decrement or size < 1e-8:
                break
            size /= 2.0
        theta, z, value = candidate, z_candidate, new_value
    fitted = HeadParams(np.zeros_like(prior.w), np.zeros_like(prior.gamma), np.zeros_like(prior.D))
    nw, ng = int(mw.sum()), int(mg.sum())
    fitted.w[mw] = theta[:nw]
    fitted.gamma[mg] = theta[nw : nw + ng]
    fitted.D[rows_d, cols_d] = theta[nw + ng :]
    return fitted, {"objective": value, "iterations": iterations}


def _sigmoid_stable(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _solve_spd(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix^-1 vector for a symmetric positive definite matrix (Cholesky; the prior's precision
    on the diagonal keeps it well conditioned)."""
    lower = np.linalg.cholesky(matrix)
    return np.linalg.solve(lower.T, np.linalg.solve(lower, vector))


def _fit_order_value(
    logs: LoggedOffers,
    x: np.ndarray,
    a: np.ndarray,
    train: np.ndarray,
    targets: dict[str, tuple[np.ndarray, np.ndarray]],
    catalog: Catalog,
    rules: RewardRules,
    attrs: _Attributes,
    config: FitConfig,
) -> tuple[HeadParams, dict[str, Any]]:
    """Log order value of converted offers relative to the user's basket: ridge toward the basket.

    The logged revenue is what the customer paid; for percent-off offers the order's list value is
    revenue / (1 - value%), which the margin and the offer cost apply to.
    """
    d, k = len(DESIGN_FEATURES), len(attrs.names)
    zero = HeadParams(np.zeros(d), np.zeros(k), np.zeros((k, d)))
    if "convert" not in targets:
        return zero, {"fitted": False, "reason": "the logs have no conversion outcome; the basket is kept"}
    converted = targets["convert"][1] == 1
    percent = np.array([rules.offer_cost[t].rule == "percent_of_order" for t in catalog.offer_types])[logs.type_idx]
    share_paid = np.where(percent, 1.0 - logs.value / 100.0, 1.0)
    rows = train & converted & (logs.revenue > 0) & (share_paid > 0)
    n = int(rows.sum())
    if n == 0:
        return zero, {"fitted": False, "reason": "no converted offer with revenue; the basket is kept"}
    list_value = logs.revenue[rows] / share_paid[rows]
    y = np.log(list_value) - np.log(basket_value(logs.obs[rows], rules.default_order_value))
    mw, mg, _ = _masks(attrs, "order_value", preference_features(rules))
    cols_w, cols_g = np.flatnonzero(mw), np.flatnonzero(mg)
    design = np.hstack([x[rows][:, cols_w], a[rows][:, cols_g]])
    weight = logs.weights()[rows]
    gram = design.T @ (design * weight[:, None]) + config.order_value_l2 * np.eye(design.shape[1])
    coef = np.linalg.solve(gram, design.T @ (weight * y))
    resid = y - design @ coef
    w0 = config.order_value_prior_weight
    variance = (float(weight @ resid**2) + w0 * config.order_value_prior_sd**2) / (float(weight.sum()) + w0)
    params = zero.copy()
    params.w[cols_w] = coef[: len(cols_w)]
    # E[value] = basket x exp(mean log ratio + variance / 2); the type one-hots sum to 1 per action.
    params.gamma[cols_g] = coef[len(cols_w) :] + variance / 2
    mean_log_ratio = float(weight @ y / weight.sum())
    return params, {"fitted": True, "rows": n, "log_sd": math.sqrt(variance), "mean_log_ratio": mean_log_ratio}


def _holdout_report(
    x: np.ndarray,
    a: np.ndarray,
    held: np.ndarray,
    targets: dict[str, tuple[np.ndarray, np.ndarray]],
    prior: dict[str, HeadParams],
    params: dict[str, HeadParams],
    config: FitConfig,
) -> dict[str, Any]:
    """Held-out log loss and calibration of P(open), P(click) and P(convert), model vs prior.

    P(click) and P(convert) are unconditional (the product of the stages), on every held-out offer
    whose outcome is known, so they judge the chain the reward uses.
    """

    def probabilities(p: dict[str, HeadParams], rows: np.ndarray) -> dict[str, np.ndarray]:
        po = _sigmoid(p["open"].logits(x[rows], a[rows]))
        pc = po * _sigmoid(p["click"].logits(x[rows], a[rows]))
        return {"open": po, "click": pc, "convert": pc * _sigmoid(p["convert"].logits(x[rows], a[rows]))}

    report: dict[str, Any] = {}
    for name in ("open", "click", "convert"):
        if any(s not in targets for s in STAGES[: STAGES.index(name) + 1]):
            continue
        # The unconditional outcome is known where the stage's own outcome is known, or an earlier
        # stage already failed (not opened -> not clicked, not converted).
        rows, y = _unconditional(name, targets)
        rows = rows & held
        if not rows.any():
            continue
        yy = y[rows]
        report[name] = {
            "n": int(rows.sum()),
            "positives": int(yy.sum()),
            "model": _scores(probabilities(params, rows)[name], yy, config.calibration_bins),
            "prior": _scores(probabilities(prior, rows)[name], yy, config.calibration_bins),
        }
    return report


def _unconditional(stage: str, targets: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    open_rows, opened = targets["open"]
    if stage == "open":
        return open_rows, opened
    click_rows, clicked = targets["click"]
    not_opened = open_rows & (opened == 0)
    rows = click_rows | not_opened
    y = np.where(click_rows, clicked, 0.0)
    if stage == "click":
        return rows, y
    conv_rows, converted = targets["convert"]
    not_clicked = rows & (y == 0)
    return conv_rows | not_clicked, np.where(conv_rows, converted, 0.0)


def _scores(p: np.ndarray, y: np.ndarray, bins: int) -> dict[str, Any]:
    """Log loss, Brier score, expected calibration error and a reliability table (equal-count bins)."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    log_loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    order = np.argsort(p, kind="stable")
    table = []
    ece = 0.0
    for part in np.array_split(order, min(bins, len(order))):
        mean_p, rate = float(p[part].mean()), float(y[part].mean())
        ece += len(part) / len(p) * abs(mean_p - rate)
        table.append({"n": len(part), "mean_predicted": mean_p, "observed_rate": rate})
    return {
        "log_loss": log_loss,
        "brier": float(np.mean((p - y) ** 2)),
        "ece": ece,
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
        "reliability": table,
    }


def _json_safe(value: Any) -> Any:
    """Plain JSON types only (numpy scalars to Python, non-finite floats to None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_fit_report(report: dict[str, Any]) -> str:
    """A readable summary of `fit_report` (held-out log loss and ECE, model vs prior)."""
    if report.get("kind") != "fitted":
        return f"response model: business-rule priors ({report.get('reason', 'no logs used')})"
    offers = report.get("offers", {})
    lines = [
        f"response model fitted on offers before {report['as_of']}: "
        f"{offers.get('train', 0):,} train / {offers.get('holdout', 0):,} held-out offers "
        f"({offers.get('without_features', 0):,} without point-in-time features left out); "
        f"the night's model refitted on {offers.get('final_fit', offers.get('train', 0)):,}",
        f"{'held-out':<10} {'n':>9} {'rate':>8} {'log loss':>10} {'prior':>10} {'ECE':>9} {'prior':>9}",
    ]
    for name, r in report.get("holdout", {}).items():
        m, p = r["model"], r["prior"]
        lines.append(
            f"P({name}){'':<{max(0, 4 - len(name))}} {r['n']:>9,} {m['observed_rate']:>8.4f} "
            f"{m['log_loss']:>10.5f} {p['log_loss']:>10.5f} {m['ece']:>9.5f} {p['ece']:>9.5f}"
        )
    return "\n".join(lines)


__all__ = [
    "FitConfig",
    "FitRequest",
    "LoggedOffers",
    "fit_response_model_to_logs",
    "format_fit_report",
]
