"""Orchestration: one function per DAG task (pipeline), training, Airflow glue, the CLI and the demo."""
