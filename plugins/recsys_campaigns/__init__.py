"""The Campaigns page of the Airflow UI: a read-only FastAPI app over recsys's analyst views.

`recsys_campaigns_plugin.py` (next to this package in `plugins/`) registers `create_app()` with
Airflow. Nothing here connects to a database or imports torch / pandas at import time.
"""
