"""Regenerates docs/images/campaigns-page.png, the README's screenshot of the Campaigns page.

    .venv/bin/python docs/images/screenshot.py           # simulate the nights, then take the screenshot
    .venv/bin/python docs/images/screenshot.py --reuse   # only the screenshot, of the nights simulated before

Needs the Debian package `chromium` and a PostgreSQL server: RECSYS_DATABASE_URL's, else the
embedded one (e.g. `RECSYS_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres`). About
10 minutes on two cores, one with `--reuse`.

What the page shows is real output. `recsys simulate` plays the NIGHTS nights before today of the
nightly run (a generated shop, PPO trained and gated each night, every active user scored with a
holdout group) with a simulated sender and simulated users answering the offers sent, in a database
of its own (`recsys_sim_screenshot`: replaced at each start, kept afterwards for `--reuse`); the
last night's purchases are then loaded with `recsys extract`, so its lift over the holdout is
measured too. Publishing stamps the wall clock, so publish and send times are the day the script
runs. An `airflow api-server` with this repository's `plugins/` then serves that database and
headless Chromium logs in and opens Browse > Campaigns, both as tests/test_plugin_campaigns.py does
(through tests/airflow_ui_support.py). The top of the page (latest runs, the last night's outcomes,
lift and send-time histogram) is captured and reduced to a palette with Pillow to keep the PNG
small. Nothing is written into `data/`: the simulation's files live in a temporary folder.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from PIL import Image

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import database_url, with_database

IMAGE = Path(__file__).resolve().with_name("campaigns-page.png")
DATABASE = "recsys_sim_screenshot"


def _airflow_ui() -> ModuleType:
    """tests/airflow_ui_support.py, the Airflow server and browser helpers the plugin's tests use."""
    sys.path.insert(0, str(PROJECT_ROOT / "tests"))
    import airflow_ui_support

    return airflow_ui_support


def simulate_nights(args: argparse.Namespace, url: str) -> None:
    """`recsys simulate` into the database at `url`, then load the last night's purchases."""
    recsys = [sys.executable, "-m", "recsys"]
    with tempfile.TemporaryDirectory(prefix="recsys-screenshot-") as out:
        subprocess.run(
            [
                *recsys,
                "simulate",
                *("--nights", str(args.nights), "--users", str(args.users), "--seed", str(args.seed)),
                *("--timesteps", str(args.timesteps), "--database", DATABASE),
                *("--out", out, "--in-process"),
            ],
            cwd=PROJECT_ROOT,
            check=True,
        )
        # the simulation leaves the last night's behaviour in the inbox for a next night to load
        last = sorted((Path(out) / "inbox").glob("events_sim_*.csv"))[-1]
        env = {**os.environ, "RECSYS_DATABASE_URL": url}
        subprocess.run([*recsys, "extract", "--source", str(last)], cwd=PROJECT_ROOT, env=env, check=True)


def capture(url: str, size: tuple[int, int]) -> bytes:
    """A PNG of Browse > Campaigns in the Airflow UI, served over the database at `url`."""
    ui = _airflow_ui()
    if ui.CHROMIUM is None:
        raise SystemExit("chromium is not installed (Debian package `chromium`)")
    with tempfile.TemporaryDirectory(prefix="recsys-screenshot-airflow-") as tmp:
        home = Path(tmp)
        env = ui.migrated_airflow_home(home, url)
        with ui.api_server(home, env) as base:
            browser = ui.Chromium(ui.CHROMIUM, window=size)
            try:  # the captured area is exactly `size`, whatever the headless window's frame takes
                browser.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=size[0],
                    height=size[1],
                    deviceScaleFactor=1,
                    mobile=False,
                )
                ui.open_campaigns_page(browser, base)
                return base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
            finally:
                browser.close()


def small_png(png: bytes, colors: int) -> bytes:
    """`png` reduced to a palette of `colors` (no dithering: flat UI colours stay flat)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    reduced = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    reduced.save(out, format="PNG", optimize=True)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help=f"keep the nights already in {DATABASE}")
    parser.add_argument("--nights", type=int, default=4)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=30_000, help="PPO steps per night")
    parser.add_argument("--size", default="1440x1000", help="the captured page area, WIDTHxHEIGHT")
    parser.add_argument("--colors", type=int, default=96, help="palette size of the PNG")
    parser.add_argument("--out", type=Path, default=IMAGE)
    args = parser.parse_args()

    url = with_database(database_url(load_settings()), DATABASE)
    if not args.reuse:
        simulate_nights(args, url)
    width, height = (int(v) for v in args.size.split("x"))
    png = small_png(capture(url, (width, height)), args.colors)
    args.out.write_bytes(png)
    print(f"wrote {args.out} ({len(png) / 1024:.0f} KiB, {width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
