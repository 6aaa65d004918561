"""How well the user features recover the synthetic shop's hidden traits: the seed's features against
the prior-shrunk ones (migration 013), as Pearson correlations with the truth over the users.

A script, not a test. It generates a shop with `recsys.benchmark.synth` (or reuses the folder),
loads it into a scratch database, builds the features as of the end date, and reads each user's
latent traits from the truth file beside the data. The server is --url, by default
RECSYS_BENCH_DATABASE_URL, else the local server at 127.0.0.1:5432.

    .venv/bin/python bench/bench_feature_truth.py [--users 20000] [--days 90] [--seeds 1 2 3]

Pairs compared (feature today -> prior-shrunk feature, against the trait):
- category focus: `category_focus` -> `category_focus_posterior`, against the truth's focus;
- channel responsiveness: `{c}_responsiveness` -> `{c}_open_rate`, against the open rate at the
  preferred hour (users with at least one logged offer on c);
- discount / free shipping: `discount_sensitivity` -> `organic_discount_share`,
  `free_shipping_preference` -> `organic_free_shipping_share`, against the traits (buyers only);
- basket: `monetary_value / purchase_count` (unshrunk mean basket) -> `order_value`, against the
  basket mean, on logs (buyers only);
- preferred hour: the mean circular distance of `preferred_local_hour` from the truth's preferred
  hour, against the `morning_share`/`evening_share` bucket guess (the middle hour of the larger bucket).
"""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
from _support import LOCAL_SERVER, bench_server, scratch_database

from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.params import CHANNELS
from recsys.benchmark.synth.truth import GroundTruth
from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.extract import extract_path
from recsys.data.features import build_features
from recsys.db import connect, fetch_all
from recsys.db.migrate import migrate

END = dt.date(2026, 11, 1)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def circular_hours(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b) % 24
    return float(np.minimum(d, 24 - d).mean())


def one_seed(server: str, seed: int, users: int, days: int) -> list[tuple[str, int, float, float]]:
    data = PROJECT_ROOT / "data" / "bench" / f"feature_truth_u{users}_d{days}_s{seed}"
    if not (data / "events.csv").exists():
        generate_data(users=users, days=days, seed=seed, out=data, end_date=END)
    truth = GroundTruth.load(truth_path_for(data))
    with scratch_database(server, "recsys_bench_feature_truth") as url:
        settings = load_settings(env={}, database_url=url)
        with connect(url) as conn:
            migrate(conn, settings)
            extract_path(conn, settings, data, reference_at=dt.datetime.combine(END, dt.time(), dt.UTC))
            build_features(conn, settings, END)
            rows = fetch_all(conn, "select * from recsys.user_features where as_of = %s order by user_id", (END,))
            offers = fetch_all(
                conn,
                "select user_id, channel, count(*) as n from recsys.offer_history "
                "where sent_at < %s group by user_id, channel",
                (dt.datetime.combine(END, dt.time(), dt.UTC) - dt.timedelta(days=settings.attribution_days),),
            )
    f = {
        k: np.array([r[k] for r in rows], dtype=float) for k in rows[0] if k not in ("as_of", "top_category", "segment")
    }
    idx = truth.index_of(f["user_id"].astype(np.int64))
    t = truth.traits
    out = [
        ("category focus", len(idx), corr(f["category_focus"], t.focus()[idx]),
         corr(f["category_focus_posterior"], t.focus()[idx])),
    ]  # fmt: skip
    sent = {(r["user_id"], r["channel"]) for r in offers}
    for j, c in enumerate(CHANNELS):
        has = np.array([(int(u), c) in sent for u in f["user_id"]])
        truth_c = t.responsiveness[idx, j]
        out.append(
            (f"{c} open rate", int(has.sum()), corr(f[f"{c}_responsiveness"][has], truth_c[has]),
             corr(f[f"{c}_open_rate"][has], truth_c[has]))
        )  # fmt: skip
    buyers = f["purchase_count"] > 0
    out.append(
        ("discount use", int(buyers.sum()),
         corr(f["discount_sensitivity"][buyers], t.discount_sensitivity[idx][buyers]),
         corr(f["organic_discount_share"][buyers], t.discount_sensitivity[idx][buyers]))
    )  # fmt: skip
    out.append(
        ("free-shipping use", int(buyers.sum()),
         corr(f["free_shipping_preference"][buyers], t.free_shipping_preference[idx][buyers]),
         corr(f["organic_free_shipping_share"][buyers], t.free_shipping_preference[idx][buyers]))
    )  # fmt: skip
    basket = np.log(t.basket_mean[idx][buyers])
    raw = np.log1p(f["monetary_value"][buyers] / f["purchase_count"][buyers])
    out.append(("basket (log)", int(buyers.sum()), corr(raw, basket), corr(np.log1p(f["order_value"][buyers]), basket)))
    bucket = np.where(f["morning_share"] >= f["evening_share"], 8.0, 23.0)
    pref = t.preferred_hour[idx]
    has_hour = ~np.isnan(f["preferred_local_hour"])
    out.append(
        ("preferred hour: mean error (h)", int(has_hour.sum()), circular_hours(bucket[has_hour], pref[has_hour]),
         circular_hours(f["preferred_local_hour"][has_hour], pref[has_hour]))
    )  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=bench_server(LOCAL_SERVER), help="the server (default: RECSYS_BENCH_DATABASE_URL, else local)"
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    for seed in args.seeds:
        print(f"seed {seed}: {args.users:,} users x {args.days} days, features as of {END}")
        print(f"  {'trait':<32} {'users':>7} {'today':>7} {'shrunk':>7}")
        for name, n, old, new in one_seed(args.url, seed, args.users, args.days):
            print(f"  {name:<32} {n:>7,} {old:>7.3f} {new:>7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
