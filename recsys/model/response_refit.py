"""Bootstrap refits of the response model: its estimation uncertainty, for the promotion gate.

`BootstrapSample.of` takes the logged offers a night's fit read (`recsys.model.fit_sample.LoggedOffers`,
loaded once by `recsys.data.logged_offers`) and the same `FitRequest`, and keeps what the fit learned
from: the same bounded sample and the same training users (the held-out users stay out).
`BootstrapSample.refits` then refits every head B times, each on a resample of those users drawn
with replacement: a user drawn k times counts k times (each of their offers' weight times k), which
is the fit on the resampled users without copying rows. The spread of what the refits predict is
the fit's estimation uncertainty given its structure, not the error of the structure itself.
`recsys.evaluation.model_evidence` reads the refits. Pure numpy/torch, no database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from recsys.model.fit_sample import LoggedOffers, bounded_sample
from recsys.model.response import ResponseModel, _prior_params
from recsys.model.response_fit import FitRequest, _fit_heads, _split_users, _stage_targets
from recsys.model.response_terms import _DESIGN_IDX, _Attributes


@dataclass(frozen=True)
class BootstrapSample:
    """The training rows of a night's fit, ready to be refitted on resamples of their users."""

    logs: LoggedOffers
    """The fit's training offers (its bounded sample, held-out users left out), with their weights."""
    request: FitRequest
    user_index: np.ndarray
    """Per offer: its user's index into the training users (0 .. n_users - 1)."""
    n_users: int

    @classmethod
    def of(cls, logs: LoggedOffers, request: FitRequest) -> BootstrapSample | None:
        """The offers the fit of `request` on `logs` trains on (same sample, same split by the
        request's seed); None when there are none (the night's model is the prior: nothing to refit)."""
        if not logs.usable.any():
            return None
        config = request.config
        sample, _ = bounded_sample(
            logs, request.as_of, max_offers=config.max_offers, recent_days=config.recent_days, seed=request.seed
        )
        train, _, _, _ = _split_users(sample.user_id, sample.usable, request.holdout_fraction, request.seed)
        rows = np.flatnonzero(train)
        if len(rows) == 0:
            return None
        logs = sample.take(rows, sample.weights()[rows])
        users, user_index = np.unique(logs.user_id, return_inverse=True)
        return cls(logs, request, user_index, len(users))

    @property
    def offers(self) -> int:
        """How many logged offers the fit trained on."""
        return len(self.user_index)

    def refits(
        self, n: int, *, seed: int, start: ResponseModel | None = None, max_offers: int | None = None
    ) -> Iterator[ResponseModel]:
        """`n` response models, each fitted (same hyperparameters, same priors) on a resample of the
        training users with replacement (by `seed`). `start`: a model whose coefficients each fit
        starts from (the night's fit: a resample's optimum lies near it, so it takes fewer steps);
        the prior stays the centre of the penalty either way, so the optimum is the same.

        `max_offers` bounds each refit's cost on a large shop: when the training offers exceed it,
        each resample draws m < n users (m / n = max_offers / offers, with replacement) and weighs
        them n / m, so the data keep their weight against the prior. The refits' spread is then
        that of a fit on m users, wider than the night's own: the check they feed gets stricter,
        never looser."""
        if n < 0:
            raise ValueError(f"the number of refits must be >= 0, got {n}")
        if max_offers is not None and max_offers < 1:
            raise ValueError(f"max_offers must be >= 1, got {max_offers}")
        draws_per_refit = self.n_users
        if max_offers is not None and self.offers > max_offers:
            draws_per_refit = max(1, round(self.n_users * max_offers / self.offers))
        scale = self.n_users / draws_per_refit
        request = self.request
        catalog, rules = request.catalog, request.rules
        attrs = _Attributes.of(catalog)
        prior = _prior_params(catalog, rules, attrs)
        logs = self.logs
        x = logs.obs[:, _DESIGN_IDX]
        a = attrs.rows(catalog, rules, logs.type_idx, logs.value, logs.channel_idx, logs.timing_idx)
        targets = _stage_targets(logs)
        rng = np.random.default_rng(seed)
        for b in range(n):
            started = time.perf_counter()
            draws = np.bincount(rng.integers(0, self.n_users, draws_per_refit), minlength=self.n_users)
            times = draws[self.user_index]
            rows = np.flatnonzero(times)
            resample = logs.take(rows, logs.weights()[rows] * times[rows] * scale)
            chosen = {k: (sel[rows], y[rows]) for k, (sel, y) in targets.items()}
            everything = np.ones(len(rows), dtype=bool)
            params, _ = _fit_heads(
                resample,
                x[rows],
                a[rows],
                everything,
                chosen,
                prior,
                catalog,
                rules,
                attrs,
                request.config,
                start=start.params if start is not None else None,
            )
            report = {
                "kind": "bootstrap_refit",
                "as_of": request.as_of.isoformat(),
                "refit": b,
                "users": self.n_users,
                "draws": draws_per_refit,
                "offers": len(rows),
                "seconds": round(time.perf_counter() - started, 3),
            }
            yield ResponseModel(catalog, rules, params, report)


__all__ = ["BootstrapSample"]
