"""The supervised warm start of a retrained PPO actor: before PPO, the new actor imitates the
response model's best offer for one night, so PPO optimises the multi-night return from there
instead of from a uniform policy (`recsys.orchestration.train`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from recsys.config.catalog import Catalog
from recsys.evaluation.results import WarmStart
from recsys.model.observation import FEATURE_NAMES, FEATURES, States
from recsys.model.policy import PPOPolicy, actor_logits

if TYPE_CHECKING:  # stable_baselines3 loads torch: imported where used
    from stable_baselines3 import PPO

    from recsys.model.response import ResponseModel
    from recsys.orchestration.train import TrainConfig

_WARM_START_BATCH = 512


def warm_start_actor(
    model: PPO, states: States, response: ResponseModel, catalog: Catalog, config: TrainConfig
) -> WarmStart:
    """Fit a new PPO actor, by cross-entropy, to the response model's best allowed offer per user.

    The examples are a sample of tonight's users (`warm_start_users`), each twice: as is, and with
    1-6 offers in the last week (the last one 1-7 nights ago), so that the actor has seen fatigued
    states too; the target is the action with the highest expected reward under `response` among
    those the user can receive (users who can receive nothing are left out). Only the actor's layers
    learn (the critic learns in PPO). Returns what it did: examples, epochs, the final loss and how
    often the actor's greedy allowed action equals the target on tonight's sample.
    """
    import torch

    from recsys.model.baselines import ResponseGreedyPolicy

    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    mask = states.action_mask(catalog)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) > config.warm_start_users:
        rows = np.sort(rng.choice(rows, size=config.warm_start_users, replace=False))
    if len(rows) == 0 or config.warm_start_steps <= 0:
        return WarmStart(examples=0, steps=0)
    obs, allowed = states.obs[rows], mask[rows]
    fatigued = obs.copy()
    for name, low, high in (("offers_last_7d", 1, 6), ("days_since_last_offer", 1, 7)):
        j = FEATURE_NAMES.index(name)
        scale = FEATURES[j][2]
        fatigued[:, j] = rng.integers(low, high + 1, size=len(rows)) / scale
    x = np.vstack([obs, fatigued]).astype(np.float32)
    targets = ResponseGreedyPolicy(catalog, response).actions(x, np.vstack([allowed, allowed]))

    policy = model.policy
    policy.set_training_mode(True)
    params = [
        *policy.pi_features_extractor.parameters(),
        *policy.mlp_extractor.policy_net.parameters(),
        *policy.action_net.parameters(),
    ]
    optimizer = torch.optim.Adam(params, lr=config.warm_start_learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    xt, yt = torch.as_tensor(x), torch.as_tensor(targets)
    loss = torch.zeros(())
    starts = range(0, len(xt), _WARM_START_BATCH)
    order = torch.randperm(len(xt), generator=generator)
    for step in range(config.warm_start_steps):
        if step and step % len(starts) == 0:  # a new epoch, a new order
            order = torch.randperm(len(xt), generator=generator)
        lo = starts[step % len(starts)]
        batch = order[lo : lo + _WARM_START_BATCH]
        loss = torch.nn.functional.cross_entropy(actor_logits(policy, xt[batch]), yt[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.set_training_mode(False)
    chosen, _ = PPOPolicy(model, catalog).act(obs, allowed)
    return WarmStart(
        examples=len(x),
        steps=config.warm_start_steps,
        epochs=round(config.warm_start_steps / len(starts), 2),
        final_loss=float(loss.item()),
        agreement=float(np.mean(chosen == targets[: len(rows)])),
        seconds=time.perf_counter() - started,
    )
