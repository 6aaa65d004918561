"""The Campaigns FastAPI app: a JSON API and a server-rendered HTML page, behind Airflow's login.

Mounted by the plugin under `/recsys` of the Airflow API server. Every route depends on Airflow's
own authentication (the JWT in the `Authorization: Bearer` header, or the `_token` cookie the UI
holds) and on the auth manager allowing the user to see plugin views: plugin endpoints are not
protected by Airflow otherwise. All routes are read-only (GET) and read recsys's analyst views as
the analyst role. FastAPI's own /docs, /redoc and /openapi.json are off: they bypass the login.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from recsys_campaigns import data

if TYPE_CHECKING:
    import psycopg2.extensions

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHANNELS = ("email", "sms", "push")


def _require_login() -> Any:
    """Airflow's dependency: a valid Airflow login allowed to see plugin views (401/403 otherwise)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    return Depends(requires_access_view(AccessView.PLUGINS))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _fmt_num(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _fmt_pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def _fmt_pp(value: Any) -> str:
    """A difference of rates in percentage points, signed."""
    return "–" if value is None else f"{100 * float(value):+.1f} pp"


def _fmt_money(value: Any) -> str:
    return "–" if value is None else f"{float(value):,.2f}"


def _histogram(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Schedule rows (hour, channel, offers) as bars: one per UTC hour, offers split by channel."""
    hours: dict[dt.datetime, dict[str, int]] = {}
    for r in rows:
        hours.setdefault(r["scheduled_hour"], {c: 0 for c in CHANNELS})[r["channel"]] = int(r["offers"])
    peak = max((sum(v.values()) for v in hours.values()), default=0)
    bars = [
        {
            "hour": hour.astimezone(dt.UTC).strftime("%Y-%m-%d %H:00"),
            "total": sum(by_channel.values()),
            "by_channel": by_channel,
            "width_pct": {c: (100.0 * n / peak if peak else 0.0) for c, n in by_channel.items()},
        }
        for hour, by_channel in sorted(hours.items())
    ]
    return {"peak": peak, "bars": bars}


@contextmanager
def _campaign_db() -> Iterator[psycopg2.extensions.connection]:
    """`data.connect()`, with a database that is not configured or does not answer as a 503."""
    try:
        with data.connect() as conn:
            yield conn
    except data.DatabaseUnavailable as e:
        raise HTTPException(status_code=503, detail=str(e)) from e


def _overview(run_id: str | None, runs_limit: int, models_limit: int) -> dict[str, Any]:
    with _campaign_db() as conn:
        runs = data.latest_runs(conn, runs_limit)
        selected = None
        if run_id is not None:
            selected = data.run(conn, run_id)
            if selected is None:
                raise HTTPException(status_code=404, detail=f"no campaign run with run_id {run_id!r}")
        elif runs:
            selected = data.run(conn, runs[0]["run_id"])
        detail = None
        if selected is not None:
            detail = {
                "run": selected,
                "histogram": _histogram(data.schedule(conn, selected["run_id"])),
                "breakdown": selected.pop("breakdown"),
            }
        models = data.leaderboard(conn, models_limit)
    return {"runs": runs, "selected": detail, "models": models}


def template_environment() -> Environment:
    """The page's Jinja environment: autoescaped HTML, undefined names are errors, number filters."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_fmt_num, pct=_fmt_pct, pp=_fmt_pp, money=_fmt_money)
    return env


def create_app() -> FastAPI:
    """The Campaigns app. Builds routes and the template environment; connects to nothing."""
    # No /docs, /redoc or /openapi.json: FastAPI serves them outside the app's dependencies, so
    # they would describe the API to anyone who can reach the server, logged in or not.
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        title="recsys campaigns",
        description="Campaign runs, their offers, outcomes and lift, and the model leaderboard (read-only).",
        dependencies=[_require_login()],
    )
    env = template_environment()

    @app.get("/api/runs")
    def api_runs(limit: int = Query(10, ge=1, le=200)) -> Any:
        """The latest campaign runs: state, model, offers by channel / offer type / timing, skipped users."""
        with _campaign_db() as conn:
            return _jsonable({"runs": data.latest_runs(conn, limit)})

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> Any:
        """One run: counts, outcomes so far and lift, the scheduled-time histogram, the per-offer breakdown."""
        return _jsonable(_overview(run_id, 1, 1)["selected"])

    @app.get("/api/models")
    def api_models(limit: int = Query(20, ge=1, le=500)) -> Any:
        """The model leaderboard with the gate's decisions, newest first."""
        with _campaign_db() as conn:
            return _jsonable({"models": data.leaderboard(conn, limit)})

    @app.get("/api/overview")
    def api_overview(
        run_id: str | None = None,
        runs: int = Query(10, ge=1, le=200),
        models: int = Query(20, ge=1, le=500),
    ) -> Any:
        """Everything the Campaigns page shows, as JSON."""
        return _jsonable(_overview(run_id, runs, models))

    @app.get("/campaigns", response_class=HTMLResponse)
    def campaigns_page(
        request: Request,
        run_id: str | None = None,
        runs: int = Query(10, ge=1, le=200),
        models: int = Query(20, ge=1, le=500),
    ) -> HTMLResponse:
        """The Campaigns page (server-rendered; the Airflow UI shows it in its navigation)."""
        overview = _overview(run_id, runs, models)
        html = env.get_template("campaigns.html").render(channels=CHANNELS, **overview)
        return HTMLResponse(html)

    return app
