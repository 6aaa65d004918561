"""The simulation's valuation under the truth and its output: values per user and night with
their intervals, the table, the saved results and the plot."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.benchmark.simulate.config import VALUE_ROWS, Z95, SimulateConfig
from recsys.benchmark.synth.truth import with_rest


@dataclass(frozen=True)
class Interval:
    """A mean over users with its 95% normal interval."""

    mean: float
    lower: float
    upper: float
    n: int

    @classmethod
    def of(cls, per_user: np.ndarray) -> Interval:
        x = np.asarray(per_user, dtype=np.float64)
        n = len(x)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        mean = float(x.mean())
        half = Z95 * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        return cls(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class NightValues:
    """One night of the table: true values per treated user, with intervals, and what happened."""

    night: int
    campaign_date: dt.date
    treated: int
    holdout: int
    values: dict[str, Interval]
    """policy, best_fixed, random, oracle, control: mean value per user and night under the truth."""
    policy_minus_fixed: Interval
    fixed_action: str
    outcomes: dict[str, int] = field(default_factory=dict)
    revenue_treated: Interval | None = None
    revenue_holdout: Interval | None = None
    model_version: str | None = None
    training_mode: str | None = None
    seconds: float = 0.0

    def flat(self) -> dict[str, Any]:
        """One flat record (CSV row / JSON object)."""
        row: dict[str, Any] = {
            "night": self.night,
            "campaign_date": self.campaign_date.isoformat(),
            "treated_users": self.treated,
            "holdout_users": self.holdout,
        }
        for name in VALUE_ROWS:
            v = self.values[name]
            row.update({name: v.mean, f"{name}_lower": v.lower, f"{name}_upper": v.upper})
        d = self.policy_minus_fixed
        row.update({"policy_minus_fixed": d.mean, "pmf_lower": d.lower, "pmf_upper": d.upper})
        row["fixed_action"] = self.fixed_action
        for key in ("revenue_treated", "revenue_holdout"):
            r: Interval | None = getattr(self, key)
            row[key] = None if r is None else r.mean
        row.update(self.outcomes)
        row.update({"model_version": self.model_version, "training_mode": self.training_mode})
        row["seconds"] = round(self.seconds, 1)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def value_users(
    truth: Any,
    catalog: Any,
    night: dt.date,
    user_ids: np.ndarray,
    sent_actions: np.ndarray,
    channel_ok: np.ndarray,
    offers_last_7d: np.ndarray,
) -> tuple[dict[str, np.ndarray], int]:
    """Per-user true values of the offers sent and of the references, on the same users and night.

    `channel_ok` (n, 3: email, sms, push) is what scoring saw: consent and an address. Returns the
    per-user arrays (policy, best_fixed, random, oracle) and the fixed action's id.
    """
    n = len(user_ids)
    mask = catalog.action_mask(np.asarray(channel_ok, dtype=bool).reshape(n, 3))
    values = with_rest(
        truth.value_matrix(user_ids, night=night, offers_last_7d=offers_last_7d, respect_consent=True), catalog
    )
    allowed = np.where(mask, values, 0.0)
    n_allowed = mask.sum(axis=1)
    random_u = np.divide(allowed.sum(axis=1), n_allowed, out=np.zeros(n), where=n_allowed > 0)
    oracle_u = np.where(n_allowed > 0, np.where(mask, values, -np.inf).max(axis=1), 0.0) if n else np.zeros(0)
    fixed = int(allowed.mean(axis=0).argmax()) if n else 0
    policy_u = values[np.arange(n), np.asarray(sent_actions, dtype=np.int64)] if n else np.zeros(0)
    return {"policy": policy_u, "best_fixed": allowed[:, fixed], "random": random_u, "oracle": oracle_u}, fixed


def revenue_per_user(buys: dict[str, np.ndarray], treated: np.ndarray, held: np.ndarray) -> tuple[Interval, Interval]:
    """Measured purchase revenue of the day per treated and per holdout user."""
    users = np.concatenate([treated, held])
    pos = {int(u): i for i, u in enumerate(users.tolist())}
    total = np.zeros(len(users))
    keep = np.array([int(u) in pos for u in buys["user_id"].tolist()], dtype=bool)
    where = np.array([pos[int(u)] for u in buys["user_id"][keep].tolist()], dtype=np.int64)
    np.add.at(total, where, buys["amount_cents"][keep] / 100.0)
    return Interval.of(total[: len(treated)]), Interval.of(total[len(treated) :])


# --- output --------------------------------------------------------------------------------------------


def format_table(rows: list[NightValues], *, header: bool = True) -> str:
    """The per-night table: true value per treated user and night, 95% intervals."""
    lines = []
    if header:
        lines.append(
            f"{'night':>5} {'date':10} {'users':>6} {'policy':>23} {'best fixed':>23} {'random':>8} "
            f"{'oracle':>8} {'control':>7} {'policy - fixed':>24} {'sent':>6} {'conv':>5} {'model':>10}"
        )
    for r in rows:
        v = r.values

        def ci(x: Interval) -> str:
            return f"{x.mean:7.4f} [{x.lower:6.4f},{x.upper:6.4f}]"

        d = r.policy_minus_fixed
        lines.append(
            f"{r.night:>5} {r.campaign_date.isoformat():10} {r.treated:>6} {ci(v['policy']):>23} "
            f"{ci(v['best_fixed']):>23} {v['random'].mean:8.4f} {v['oracle'].mean:8.4f} {0.0:7.4f} "
            f"{d.mean:+7.4f} [{d.lower:+.4f},{d.upper:+.4f}] {r.outcomes.get('sent', 0):>6} "
            f"{r.outcomes.get('converted', 0):>5} {(r.training_mode or '-'):>10}"
        )
    return "\n".join(lines)


def save_results(
    rows: list[NightValues],
    out: Path,
    config: SimulateConfig,
    *,
    cohort: Any = None,
    summary: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """values.csv, values.json and values.png in `out`. With the fixed cohort's values
    (`cohort.CohortValues`), each night's row gains `cohort_<name>` (mean per cohort user, with the
    95% interval for the policy and the best fixed offer at its cadence), and values.json the
    summary over the valuation range with the bar's statistic under "cohort"."""
    flat = [r.flat() for r in rows]
    if cohort is not None:
        for t, row in enumerate(flat):
            for name, v in cohort.night(t).items():
                row[f"cohort_{name}"] = v.mean
                if name in ("policy", "fixed_cadence"):
                    row.update({f"cohort_{name}_lower": v.lower, f"cohort_{name}_upper": v.upper})
            row["cohort_policy_contacted"] = float(cohort.sends["policy"][t].mean())
    paths = {"csv": out / "values.csv", "json": out / "values.json", "png": out / "values.png"}
    keys = list(flat[0]) if flat else []
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(flat)
    meta = {k: (str(v) if isinstance(v, Path | dt.date) else v) for k, v in dataclasses.asdict(config).items()}
    meta["start"] = config.first_night().isoformat()
    doc: dict[str, Any] = {"config": meta, "nights": flat}
    if summary is not None:
        doc["cohort"] = summary
    paths["json"].write_text(json.dumps(doc, indent=2, default=_plain) + "\n")
    plot_values(rows, paths["png"], title=f"recsys simulate: {config.users:,} users, seed {config.seed}")
    return paths


def _plain(x: Any) -> Any:
    """numpy scalars (and NaN) as JSON values."""
    if isinstance(x, np.generic):
        x = x.item()
    return None if isinstance(x, float) and not math.isfinite(x) else x


def plot_values(rows: list[NightValues], path: Path, *, title: str = "recsys simulate") -> None:
    """True value per treated user and night: policy against the references, with 95% bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.night for r in rows]
    styles = {
        "oracle": ("oracle (best offer per user)", "tab:green", ":"),
        "policy": ("policy (offers sent)", "tab:blue", "-"),
        "best_fixed": ("best single fixed offer", "tab:orange", "--"),
        "random": ("uniform random", "tab:gray", "-."),
        "control": ("control group (no offer)", "black", "-"),
    }
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for name, (label, colour, line) in styles.items():
        mean = [r.values[name].mean for r in rows]
        ax.plot(x, mean, line, color=colour, label=label, marker="o" if name == "policy" else None, lw=1.8)
        if name != "control":
            lo = [r.values[name].lower for r in rows]
            hi = [r.values[name].upper for r in rows]
            ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
    ax.set_xlabel("night")
    ax.set_ylabel("true value per treated user and night")
    ax.set_xticks(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
