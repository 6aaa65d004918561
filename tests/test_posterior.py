"""The posterior ceiling (`recsys.benchmark.posterior`) on a small generated shop whose truth is known.

The posterior reads only what the database shows (events, logged offers, consent) and the generator's
priors; the truth is read here only to check it. Its per-user traits must track the truth better
than the prior alone does, its decisions must pick allowed actions only, and under the truth they
must be worth more than the rule heuristic's. One shop (1,500 users over 60 days), loaded once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from shop_support import clear_shop

from recsys.benchmark.posterior import (
    POSTERIOR_STAGES,
    PosteriorConfig,
    load_observed,
    posterior_actions,
    posterior_stages,
    posterior_traits,
)
from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.params import SynthParams
from recsys.benchmark.synth.traits import sigmoid
from recsys.benchmark.synth.truth import GroundTruth
from recsys.benchmark.truth_eval import evaluate_against_truth
from recsys.config.catalog import load_catalog
from recsys.config.settings import load_settings
from recsys.data.extract import extract_path
from recsys.data.features import build_features
from recsys.data.states import load_states
from recsys.db import connect
from recsys.model.baselines import RuleHeuristicPolicy
from recsys.model.observation import FEATURE_NAMES

CATALOG = load_catalog().without_rest()
END = dt.date(2026, 9, 1)
PARAMS = SynthParams()
CONFIG = PosteriorConfig(particles=512, samples=32, seed=7)


@pytest.fixture(scope="module")
def shop(migrated_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """1,500 generated users over 60 days, extracted, with features as of END."""
    folder = tmp_path_factory.mktemp("posterior")
    out = folder / "data"
    generate_data(users=1500, days=60, seed=11, out=out, end_date=END)
    settings = load_settings(env={}, database_url=migrated_url, data_dir=folder, inbox=folder / "inbox")
    with connect(migrated_url) as conn:
        clear_shop(conn)
        results = extract_path(conn, settings, out, reference_at=dt.datetime.combine(END, dt.time(), dt.UTC))
        assert all(r.status == "loaded" for r in results), [r.describe() for r in results]
        build_features(conn, settings, END)
        yield {"conn": conn, "truth": GroundTruth.load(truth_path_for(out)), "truth_path": truth_path_for(out)}
        conn.rollback()
        clear_shop(conn)


@pytest.fixture(scope="module")
def posterior(shop: dict) -> dict:
    states = load_states(shop["conn"], END)
    obs = load_observed(shop["conn"], END, states.user_ids)
    post = posterior_traits(obs, PARAMS, CONFIG)
    truth = shop["truth"]
    idx = truth.index_of(states.user_ids)

    def mean(x: np.ndarray) -> np.ndarray:
        return x.reshape(obs.n, CONFIG.samples, *x.shape[1:]).mean(axis=1)

    return {"states": states, "obs": obs, "post": post, "idx": idx, "mean": mean}


def _mse(guess: np.ndarray, true: np.ndarray) -> float:
    return float(((guess - true) ** 2).mean())


def test_the_posterior_tracks_the_true_traits_better_than_the_prior(shop: dict, posterior: dict) -> None:
    truth, idx, mean, post = shop["truth"], posterior["idx"], posterior["mean"], posterior["post"]
    assert len(post.traits.fatigue) == posterior["obs"].n * CONFIG.samples
    # open rate per channel, over the users who consent to it (offers went there): the prior alone
    # guesses the population mean for everybody
    true_rate = truth.traits.responsiveness[idx]
    prior_rate = sigmoid(np.asarray(PARAMS.open_rate_logit) + np.random.default_rng(0).standard_normal((100_000, 3)))
    guess = mean(post.traits.responsiveness)
    consent = posterior["obs"].consent
    for c in range(3):
        g, true = guess[consent[:, c], c], true_rate[consent[:, c], c]
        assert np.corrcoef(g, true)[0, 1] > 0.3, c
        assert _mse(g, true) < 0.8 * _mse(prior_rate[:, c].mean(), true), c
    # category focus, the log basket and the preferred hour (circular distance) likewise
    k = post.traits.category_affinity.shape[1]
    focus = mean((post.traits.category_affinity.max(axis=1) - 1.0 / k) / (1.0 - 1.0 / k))
    true_focus = truth.traits.focus()[idx]
    assert np.corrcoef(focus, true_focus)[0, 1] > 0.5
    assert _mse(focus, true_focus) < 0.7 * _mse(true_focus.mean(), true_focus)
    log_basket = mean(np.log(post.traits.basket_mean))
    true_log_basket = np.log(truth.traits.basket_mean[idx])
    assert _mse(log_basket, true_log_basket) < 0.85 * _mse(np.log(PARAMS.basket_median), true_log_basket)
    angle = post.traits.preferred_hour.reshape(-1, CONFIG.samples) * 2 * np.pi / 24
    hour = np.mod(np.arctan2(np.sin(angle).mean(axis=1), np.cos(angle).mean(axis=1)) * 24 / (2 * np.pi), 24)
    miss = np.abs(np.mod(hour - truth.traits.preferred_hour[idx] + 12, 24) - 12)
    evening = np.abs(np.mod(PARAMS.preferred_hour_modes[2] - truth.traits.preferred_hour[idx] + 12, 24) - 12)
    assert np.median(miss) < 0.25 * np.median(evening)
    assert post.ess.min() > 1.0


def test_the_posterior_ceiling_picks_allowed_actions_and_beats_the_rule(shop: dict, posterior: dict) -> None:
    states = posterior["states"]
    mask = states.action_mask(CATALOG)
    k = states.raw[:, FEATURE_NAMES.index("offers_last_7d")]
    chosen, _ = posterior_actions(shop["conn"], END, states.user_ids, mask, k, PARAMS, CATALOG, CONFIG)
    has = mask.any(axis=1)
    assert (~has).any() and has.any()
    assert (chosen[~has] == -1).all()
    assert mask[np.flatnonzero(has), chosen[has]].all()
    result = evaluate_against_truth(
        shop["conn"],
        shop["truth_path"],
        END,
        {"rule heuristic": RuleHeuristicPolicy(CATALOG)},
        catalog=CATALOG,
        n_boot=50,
        paired_with="rule heuristic",
        choices={"posterior ceiling": chosen},
    )
    ceiling = result.row("posterior ceiling")
    assert ceiling.normalised > result.row("rule heuristic").normalised + 0.15
    assert ceiling.paired_upper < 0  # the rule is below it on the same resampled users
    assert "posterior ceiling" in result.table()


def test_choices_of_actions_a_user_cannot_receive_are_refused(shop: dict, posterior: dict) -> None:
    mask = posterior["states"].action_mask(CATALOG)
    blocked = np.where(mask.any(axis=1) & ~mask.all(axis=1), (~mask).argmax(axis=1), -1)
    assert (blocked >= 0).any()
    with pytest.raises(ValueError, match="picks actions the users cannot receive"):
        evaluate_against_truth(shop["conn"], shop["truth_path"], END, {}, catalog=CATALOG, choices={"bad": blocked})
    with pytest.raises(ValueError, match=r"has shape \(3,\)"):
        evaluate_against_truth(
            shop["conn"], shop["truth_path"], END, {}, catalog=CATALOG, choices={"short": np.zeros(3, int)}
        )


def test_the_response_matrix_gives_the_value_matrix(shop: dict, posterior: dict) -> None:
    truth = shop["truth"]
    ids = posterior["states"].user_ids[:50]
    k = np.arange(len(ids)) % 3
    r = truth.response_matrix(ids, night=END, offers_last_7d=k)
    assert r.p_open.shape == (len(ids), truth.n_actions)
    values = truth.value_matrix(ids, night=END, offers_last_7d=k, respect_consent=False)
    np.testing.assert_allclose(r.expected_value(PARAMS.unsubscribe_penalty), values)


def test_the_stages_are_the_posterior_means_of_the_generator_s_response(shop: dict, posterior: dict) -> None:
    obs, post, states = posterior["obs"], posterior["post"], posterior["states"]
    k = states.raw[:, FEATURE_NAMES.index("offers_last_7d")]
    stages = posterior_stages(obs, PARAMS, CATALOG, END, k, CONFIG)
    assert set(stages) == set(POSTERIOR_STAGES)
    # the same draws (the config's seed), valued directly for the first users
    s, users = CONFIG.samples, 20
    draws = GroundTruth(
        user_ids=np.arange(obs.n * s),
        traits=post.traits,
        consent=np.ones((obs.n * s, 3), dtype=bool),
        timezone=np.repeat(obs.timezone, s),
        catalog=CATALOG,
        params=PARAMS,
        meta={"end_date": END.isoformat()},
    )
    rows = np.arange(users * s)
    r = draws.response_matrix(rows, night=END, offers_last_7d=np.repeat(k, s)[rows])
    for name, x in (("open", r.p_open), ("click", r.p_click), ("convert", r.p_convert), ("net", r.net_value)):
        np.testing.assert_allclose(stages[name][:users], x.reshape(users, s, -1).mean(axis=1), err_msg=name)
    # and they track the truth's own stages
    true = shop["truth"].response_matrix(states.user_ids, night=END, offers_last_7d=k)
    for name, x in (("open", true.p_open), ("click", true.p_click)):
        assert np.corrcoef(stages[name].ravel(), x.ravel())[0, 1] > 0.5, name
