"""Airflow plugin: the Campaigns page (recsys campaign runs, offers, lift, model leaderboard).

Airflow loads this file from its plugins folder (point `AIRFLOW__CORE__PLUGINS_FOLDER` at this
repository's `plugins/`); that folder is on `sys.path`, so the `recsys_campaigns` package beside it
imports. It mounts the FastAPI app under `/recsys` of the API server and adds a "Campaigns" entry
to the UI's navigation that shows `/recsys/campaigns` inside the UI. Importing it is cheap: no
database connection, no torch or pandas.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from recsys_campaigns.app import create_app

URL_PREFIX = "/recsys"


class RecsysCampaignsPlugin(AirflowPlugin):
    """Registers the Campaigns app and its navigation entry."""

    name = "recsys_campaigns"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as class attributes
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "recsys campaigns"},
    ]
    external_views = [  # noqa: RUF012
        {
            "name": "Campaigns",
            "href": "recsys/campaigns",
            "destination": "nav",
            "url_route": "campaigns",
            "category": "browse",
        },
    ]
