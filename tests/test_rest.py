"""The rest (issue 13): a `no_offer` action in the catalog, models that keep scoring when the catalog
grows, and every scored user's decision in campaign_decisions (offer, rest, holdout, skipped)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from psycopg2 import sql
from test_campaign_scoring import DAY, _population, add_users, artifact, campaign, offers, score  # noqa: F401
from upgrade_support import PREVIOUS_RELEASE, build_release_database, sql_before

from recsys.benchmark.toy import toy_ppo, toy_ppo_artifact, toy_record
from recsys.campaign import load_rules
from recsys.config import load_config
from recsys.config.catalog import REST, Catalog, action_mapping, load_catalog
from recsys.config.reward import load_reward_rules
from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import connect, fetch_all, fetch_value
from recsys.db.migrate import migrate
from recsys.errors import ConfigError, RecsysError
from recsys.evaluation.registry import champion, load_policy, record_decision, register, rule_heuristic_record
from recsys.model.env import OfferDynamics
from recsys.model.observation import FEATURE_NAMES, N_FEATURES
from recsys.model.policy import PPOPolicy
from recsys.model.response import prior_response_model
from recsys.orchestration.train_mode import no_champion_reason, resolve_mode

SEED_FINGERPRINT = "d6d00555db44fadc4e910582d838f3b7768e7b27237866aeb726dcb271d524d2"
"""The seed catalog's fingerprint (108 offers) before the rest existed: stored with every older model."""


def _config_with(tmp_path: Path, line: str) -> Path:
    text = (PROJECT_ROOT / "recsys" / "config.toml").read_text(encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(text.replace("rest_action = true", line), encoding="utf-8")
    return path


def test_the_rest_is_the_last_action_and_the_offers_keep_their_ids_and_fingerprint(tmp_path: Path) -> None:
    catalog = load_catalog()
    assert catalog.rest_action and catalog.n_actions == 109 and catalog.n_offers == 108
    rest = catalog.actions[-1]
    assert (rest.action_id, rest.offer_type, rest.is_rest, catalog.rest_id) == (108, REST, True, 108)
    assert rest.describe("") == "no offer tonight (rest)"
    offers = catalog.without_rest()
    assert [a.key for a in offers.actions] == [a.key for a in catalog.actions[:108]]
    assert offers.fingerprint() == SEED_FINGERPRINT != catalog.fingerprint()
    off = load_catalog(_config_with(tmp_path, "rest_action = false"))
    assert off.n_actions == 108 and off.fingerprint() == SEED_FINGERPRINT
    assert Catalog.from_dict(catalog.to_dict()) == catalog
    # a catalog stored before the rest existed has none
    stored = {k: v for k, v in catalog.to_dict().items() if k != "rest_action"}
    assert Catalog.from_dict(stored).fingerprint() == SEED_FINGERPRINT


def test_a_bad_rest_action_value_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = _config_with(tmp_path, 'rest_action = "yes"')
    with pytest.raises(ConfigError, match=r"\[catalog\] rest_action must be true or false, got 'yes'"):
        load_config(path)


def test_the_rest_is_allowed_wherever_some_offer_is() -> None:
    catalog = load_catalog()
    channel_ok = np.array([[True, False, False], [False, False, False], [False, True, True]])
    mask = catalog.action_mask(channel_ok)
    assert mask.shape == (3, 109)
    assert mask[:, 108].tolist() == [True, False, True]  # nobody reachable is skipped, never rested
    assert (mask[:, :108] == catalog.without_rest().action_mask(channel_ok)).all()


def test_actions_are_matched_by_what_they_are_and_a_missing_one_is_refused() -> None:
    catalog = load_catalog()
    trained = [dataclasses.asdict(a) | {"value": a.value} for a in catalog.without_rest().actions]
    trained = [{k: a[k] for k in ("offer_type", "value", "channel", "timing")} for a in trained]
    assert (action_mapping(trained, catalog) == np.arange(108)).all()
    assert (action_mapping(trained[::-1], catalog) == np.arange(108)[::-1]).all()
    smaller = dataclasses.replace(catalog, values=(5.0, 10.0))
    with pytest.raises(ValueError, match=r"36 of its 108 actions are not in the configured catalog: discount/15"):
        action_mapping(trained, smaller)


def test_the_rest_is_worth_exactly_zero_and_sends_nothing_in_the_environment() -> None:
    catalog = load_catalog()
    response = prior_response_model(catalog, load_reward_rules())
    rng = np.random.default_rng(3)
    obs = rng.random((50, N_FEATURES))
    for name in ("email_consent", "sms_consent", "push_consent"):
        obs[:, FEATURE_NAMES.index(name)] = 1.0
    rewards = response.reward_matrix(obs)
    assert rewards.shape == (50, 109) and (rewards[:, 108] == 0.0).all()
    assert (response.expected_reward(obs, np.full(50, 108)) == 0.0).all()
    assert response.channel_allowed(np.zeros((2, N_FEATURES)))[:, 108].all()
    # the offers are valued as without the rest
    offers_only = prior_response_model(catalog.without_rest(), load_reward_rules()).reward_matrix(obs)
    assert np.array_equal(rewards[:, :108], offers_only)

    fatigue = FEATURE_NAMES.index("offers_last_7d")
    obs[:, fatigue] = 0.0  # fresh users: any offer sent would show in the 7-night window
    dynamics = OfferDynamics(response, obs, None, n=50, horizon=3, reward_mode="sampled")
    dynamics.rngs = [np.random.default_rng(i) for i in range(50)]
    dynamics.reset(np.arange(50), start_index=list(range(50)))
    result = dynamics.step(np.full(50, 108))
    assert not result.sent.any() and (result.reward == 0.0).all() and (result.expected_reward == 0.0).all()
    assert not result.unsubscribed.any()
    assert (dynamics.obs[:, fatigue] == 0.0).all()  # resting adds no fatigue
    assert dynamics.action_mask()[:, 108].all()


def test_a_model_of_the_108_offers_never_picks_the_rest_on_the_grown_catalog() -> None:
    catalog = load_catalog()
    model = toy_ppo(catalog.without_rest(), seed=3)
    with pytest.raises(RecsysError, match="108 actions but the catalog has 109"):
        PPOPolicy(model, catalog)
    policy = PPOPolicy(model, catalog, action_ids=np.arange(108))
    obs = np.random.default_rng(1).random((200, N_FEATURES)).astype(np.float32)
    mask = catalog.action_mask(np.ones((200, 3), bool))
    probs = policy.probabilities(obs, mask)
    assert probs.shape == (200, 109) and (probs[:, 108] == 0.0).all() and np.allclose(probs.sum(axis=1), 1.0)
    actions, chosen = policy.act(obs, mask)
    assert (actions < 108).all() and (actions >= 0).all()
    same = PPOPolicy(model, catalog.without_rest()).act(obs, mask[:, :108])
    assert np.array_equal(actions, same[0]) and np.allclose(chosen, same[1])
    # a user whose only allowed action is one the model never saw: nothing to pick
    only_rest = np.zeros((1, 109), bool)
    only_rest[0, 108] = True
    assert policy.act(obs[:1], only_rest)[0].tolist() == [-1]


def test_a_champion_of_the_108_offers_stays_champion_when_the_catalog_gains_the_rest() -> None:
    catalog = load_catalog()
    old = catalog.without_rest()
    record = toy_record(old, "ppo-108", b"", seed=1, trained_on=DAY, total_timesteps=64)
    record.check_compatible(catalog)
    assert (record.action_ids(catalog) == np.arange(108)).all()
    assert no_champion_reason(record, catalog) == ""  # no bootstrap of a new rule heuristic
    # its 108-output network cannot be continued on 109 actions: a retrain, judged by the gate
    mode, why = resolve_mode("auto", record, catalog, parent=None)
    assert mode == "retrain" and "smaller catalog" in why
    with pytest.raises(RecsysError, match="cannot fine-tune"):
        resolve_mode("fine_tune", record, catalog, parent=None)
    rule = rule_heuristic_record(old, as_of=DAY, response_model={})
    assert no_champion_reason(rule, catalog) == ""
    # a catalog that lost some of the champion's offers has no champion
    smaller = dataclasses.replace(catalog, values=(5.0, 10.0))
    assert "lost some of the champion's offers" in no_champion_reason(record, smaller)
    with pytest.raises(RecsysError, match="does not contain"):
        record.check_compatible(smaller)


@pytest.fixture
def rested(campaign, settings):  # noqa: F811 - the campaign fixture of test_campaign_scoring
    """The campaign database with a champion trained on the 108 offers and users to score."""
    conn, _ = campaign
    old = load_catalog().without_rest()
    blob = toy_ppo_artifact(old, seed=5)
    with connect(conn.dsn) as own:
        register(own, toy_record(old, "ppo-108", blob, seed=5, trained_on=DAY, total_timesteps=64))
        record_decision(own, "ppo-108", decision="bootstrap", reasons=[], evaluation={})
    add_users(conn, DAY, _population())
    return conn, settings


def _decisions(conn) -> list[dict]:
    return fetch_all(conn, "select * from recsys.campaign_decisions where campaign_date = %s order by user_id", (DAY,))


def test_every_scored_user_decision_is_recorded_and_rests_never_reach_senders(rested) -> None:
    conn, settings = rested
    rules = dataclasses.replace(load_rules(), exploration_share=1.0)  # uniform: some draws are the rest
    summary = score(settings, DAY, run_id="rest-1", rules=rules)
    assert summary["model_version"] == "ppo-108"  # the 108-offer champion scores on the grown catalog
    rows, decisions = offers(conn), _decisions(conn)
    by = {k: [d for d in decisions if d["decision"] == k] for k in ("offer", "rest", "holdout", "skipped")}
    assert len(decisions) == summary["users"] == 300 == len({d["user_id"] for d in decisions})
    assert summary["rests"] == len(by["rest"]) > 0
    assert summary["offers"] == len(by["offer"]) == len(rows)
    assert summary["holdout"] == len(by["holdout"])
    assert {r["user_id"] for r in rows} == {d["user_id"] for d in by["offer"]}
    assert all(r["offer_type"] != REST and r["action_id"] < 108 for r in rows)
    assert all(d["action_id"] == 108 and 0 < d["propensity"] <= 1 and d["is_exploration"] for d in by["rest"])
    skipped = {d["skip_reason"] for d in by["skipped"]}
    assert skipped == set(summary["skipped"]) and len(by["skipped"]) == sum(summary["skipped"].values())
    assert all(d["action_id"] is None and d["propensity"] is None for d in by["skipped"])
    assert all(d["model_version"] == "ppo-108" and d["features_date"] == DAY for d in decisions)
    offered = {r["user_id"]: r for r in rows}
    assert all(float(offered[d["user_id"]]["propensity"]) == d["propensity"] for d in by["offer"])
    run = fetch_all(conn, "select counts from recsys.campaign_runs where run_id = 'rest-1'")[0]
    assert run["counts"]["rests"] == len(by["rest"])
    assert fetch_value(conn, "select rested_users from recsys.v_campaign_runs where run_id = 'rest-1'") == len(
        by["rest"]
    )
    assert all(d["segment"] == "loyal" for d in decisions if d["decision"] != "skipped")
    # intent to treat: the treated arm is everyone scored and not held out, the rested included
    groups = fetch_all(conn, "select * from recsys.v_campaign_summary where run_id = 'rest-1'")
    assert sum(g["treated_users"] for g in groups) == len(by["offer"]) + len(by["rest"])
    assert sum(g["offers"] for g in groups) == len(rows)
    assert sum(g["holdout_users"] for g in groups) == len(by["holdout"])
    (rest_group,) = [g for g in groups if g["offer_type"] == REST and g["treated_users"] > 0]
    assert (rest_group["channel"], rest_group["offers"], rest_group["treated_users"]) == ("none", 0, len(by["rest"]))

    # the night's decisions are its own partition, built by the run and attached
    partition = f"recsys.campaign_decisions_{DAY:%Y%m%d}"
    in_partition = sql.SQL("select count(*) from only {}").format(sql.Identifier(*partition.split(".")))
    assert fetch_value(conn, in_partition) == len(decisions)
    assert fetch_value(conn, "select relispartition from pg_class where oid = %s::regclass", (partition,))

    # a re-run of the date replaces the decisions: same users, no duplicates, the new run's id
    again = score(settings, DAY, run_id="rest-2", rules=dataclasses.replace(rules, exploration_share=0.0))
    after = _decisions(conn)
    assert fetch_value(conn, in_partition) == len(after)
    assert [d["user_id"] for d in after] == [d["user_id"] for d in decisions]
    assert {d["run_id"] for d in after} == {"rest-2"}
    assert again["rests"] == 0 == sum(d["decision"] == "rest" for d in after)  # the champion never rests
    assert len(offers(conn)) == again["offers"] == sum(d["decision"] == "offer" for d in after)


def test_a_run_killed_after_writing_its_decisions_leaves_none(rested, monkeypatch) -> None:
    import recsys.campaign.score as score_module

    conn, settings = rested

    def boom(*args, **kwargs) -> None:
        raise RuntimeError("killed before the shard's commit")

    partition = f"recsys.campaign_decisions_{DAY:%Y%m%d}"
    existed = fetch_value(conn, "select to_regclass(%s)", (partition,))
    monkeypatch.setattr(score_module, "finish_shard", boom)  # after every write, before the commit
    with pytest.raises(RuntimeError, match="killed"):
        score(settings, DAY, run_id="dead")
    assert _decisions(conn) == [] and offers(conn) == []
    assert fetch_value(conn, "select to_regclass(%s)", (partition,)) == existed  # no partition left behind
    assert fetch_value(conn, "select state from recsys.campaign_runs where run_id = 'dead'") == "failed"


def test_migration_011_upgrades_a_database_at_head_010_and_its_champion_keeps_scoring(
    empty_database_url: str, tmp_path: Path
) -> None:
    """A database at head 010 with data and a rule heuristic champion of the 108 offers: 011 adds
    campaign_decisions, keeps every row, and the champion scores on the catalog with the rest."""
    previous = sql_before(
        tmp_path / "sql",
        "011_campaign_decisions.sql",
        "012_exploration_source.sql",
        "014_campaign_decisions_partitions.sql",
    )
    build_release_database(empty_database_url, PREVIOUS_RELEASE)
    with connect(empty_database_url) as conn:
        migrate(conn, load_settings(env={}, database_url=empty_database_url, sql_dir=previous))
    old = load_catalog().without_rest()
    rule = rule_heuristic_record(old, as_of=DAY, response_model={})
    with connect(empty_database_url) as conn:
        register(conn, rule)
        record_decision(conn, rule.model_version, decision="bootstrap", reasons=[], evaluation={})
        conn.commit()
        tables = ("campaign_offers", "campaign_holdout", "campaign_runs", "policy_models")
        before = {t: fetch_value(conn, f"select count(*) from recsys.{t}") for t in tables}  # noqa: S608
        assert fetch_value(conn, "select to_regclass('recsys.campaign_decisions')") is None
    with connect(empty_database_url) as conn:
        applied = migrate(conn, load_settings(env={}, database_url=empty_database_url)).applied
    assert applied == [
        "011_campaign_decisions.sql",
        "012_exploration_source.sql",
        "014_campaign_decisions_partitions.sql",
    ]
    with connect(empty_database_url) as conn:
        after = {t: fetch_value(conn, f"select count(*) from recsys.{t}") for t in tables}  # noqa: S608
        assert after == before
        assert fetch_value(conn, "select count(*) from recsys.campaign_decisions") == 0
        comment = fetch_value(conn, "select obj_description('recsys.campaign_decisions'::regclass)")
        assert "rest" in comment
        current = champion(conn)
        assert current.model_version == rule.model_version
        catalog = load_catalog()
        current.check_compatible(catalog)
        policy = load_policy(current, catalog)
        obs = np.random.default_rng(2).random((20, N_FEATURES)).astype(np.float32)
        probs = policy.probabilities(obs, catalog.action_mask(np.ones((20, 3), bool)))
        assert (probs[:, 108] == 0.0).all() and np.allclose(probs.sum(axis=1), 1.0)


def test_recommend_prints_the_rest_in_the_seed_format() -> None:
    from recsys.campaign.recommend import Recommendation

    rest = load_catalog().actions[-1]
    features = dict.fromkeys(FEATURE_NAMES, 1.0)
    text = Recommendation(42, DAY, features, rest.action_id, rest.describe(""), 0.61, "m").format()
    assert "Recommended Action:\nno offer tonight (rest)\n(action 108, probability 61.0% under model m)" in text


def test_a_saved_model_of_the_108_offers_scores_on_the_catalog_with_the_rest(tmp_path: Path) -> None:
    catalog = load_catalog()
    path = tmp_path / "m.zip"
    toy_ppo(catalog.without_rest(), seed=4).save(path)
    policy = PPOPolicy.from_file(path, catalog)
    obs = np.random.default_rng(5).random((50, N_FEATURES)).astype(np.float32)
    actions, _ = policy.act(obs, catalog.action_mask(np.ones((50, 3), bool)))
    assert ((actions >= 0) & (actions < 108)).all()
