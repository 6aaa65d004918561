"""The showcase's bar: `recsys simulate --nights 7` over several seeds, summarised.

Runs one simulation per seed (each in its own database and folder), then writes one figure with a
panel per seed (`simulate_seeds.png`) and a markdown table per seed (`simulate_seeds.md`), and says
whether the policy's true value is above the best fixed offer on the last night beyond the 95%
interval of the paired difference. `--report-only` summarises folders that earlier runs left.

    .venv/bin/python bench/bench_simulate.py --seeds 1 2 3 --users 5000 --out data/simulate-bench

Timings depend on the machine and what else runs on it; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from recsys.benchmark.simulate import VALUE_ROWS, SimulateConfig, simulate


def _load(folder: Path) -> dict:
    return json.loads((folder / "values.json").read_text())


def markdown(seed: int, nights: list[dict]) -> str:
    lines = [
        f"Seed {seed}:",
        "",
        "| night | date | treated | policy [95% CI] | best fixed [95% CI] | random | oracle | control "
        "| policy - fixed [95% CI] | model |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for n in nights:

        def ci(name: str, n: dict = n) -> str:
            return f"{n[name]:.4f} [{n[name + '_lower']:.4f}, {n[name + '_upper']:.4f}]"

        lines.append(
            f"| {n['night']} | {n['campaign_date']} | {n['treated_users']:,} | {ci('policy')} | {ci('best_fixed')} "
            f"| {n['random']:.4f} | {n['oracle']:.4f} | {n['control']:.4f} "
            f"| {n['policy_minus_fixed']:+.4f} [{n['pmf_lower']:+.4f}, {n['pmf_upper']:+.4f}] "
            f"| {n.get('training_mode') or '-'} |"
        )
    last = nights[-1]
    verdict = "met" if last["pmf_lower"] > 0 else "not met"
    lines += ["", f"Policy above the best fixed offer on night {last['night']}, beyond the interval: **{verdict}**."]
    return "\n".join(lines)


def figure(runs: dict[int, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "oracle": ("oracle", "tab:green", ":"),
        "policy": ("policy (offers sent)", "tab:blue", "-"),
        "best_fixed": ("best fixed offer", "tab:orange", "--"),
        "random": ("uniform random", "tab:gray", "-."),
        "control": ("control (no offer)", "black", "-"),
    }
    assert set(styles) == set(VALUE_ROWS)
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4), dpi=110, sharey=True, squeeze=False)
    for ax, (seed, nights) in zip(axes[0], sorted(runs.items()), strict=True):
        x = [n["night"] for n in nights]
        for name, (label, colour, line) in styles.items():
            ax.plot(x, [n[name] for n in nights], line, color=colour, label=label, lw=1.6)
            if name != "control":
                lo = [n[f"{name}_lower"] for n in nights]
                hi = [n[f"{name}_upper"] for n in nights]
                ax.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
        ax.set_title(f"seed {seed}")
        ax.set_xlabel("night")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("true value per treated user and night")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("recsys simulate: true value of the offers sent, 95% intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--timesteps", type=int, default=200_000)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("data/simulate-bench"))
    parser.add_argument("--report-only", action="store_true", help="summarise OUT/seedN folders of earlier runs")
    args = parser.parse_args(argv)

    runs: dict[int, list[dict]] = {}
    for seed in args.seeds:
        folder = args.out / f"seed{seed}"
        if not args.report_only:
            config = SimulateConfig(
                nights=args.nights,
                users=args.users,
                seed=seed,
                out=folder,
                timesteps=args.timesteps,
                in_process=args.in_process,
                database=f"recsys_sim_bench_{seed}",
            )
            simulate(config)
        runs[seed] = _load(folder)["nights"]
    args.out.mkdir(parents=True, exist_ok=True)
    figure(runs, args.out / "simulate_seeds.png")
    text = "\n\n".join(markdown(seed, nights) for seed, nights in sorted(runs.items()))
    (args.out / "simulate_seeds.md").write_text(text + "\n")
    print(text)
    met = [not math.isnan(n[-1]["pmf_lower"]) and n[-1]["pmf_lower"] > 0 for n in runs.values()]
    print(
        f"\nbar (policy above best fixed on the last night, beyond the interval): met on {sum(met)} of {len(met)} seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
