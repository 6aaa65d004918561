"""Celery settings for the CeleryExecutor: Airflow's defaults, with broker prefetching off.

Airflow's `[celery] celery_config_options` names this dict (docker-compose.yml's celery profile and
the Celery test set `AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=recsys.orchestration.celery_config.CELERY_CONFIG`).

Why: with Redis as the broker, a worker whose every process is busy still takes the next message
off the queue and holds it until a process frees up, even with `worker_prefetch_multiplier = 1`
and late acks. The nightly DAG's mapped score shards are queued at the same moment; measured on
the Celery test's three one-process workers, one worker took both shards in 3 of 7 runs and ran
them one after the other while the other two sat idle. Celery 5.6's `worker_disable_prefetch`
makes a worker fetch a message only when a process slot is free, so concurrent shards go to free
workers. It applies to Redis brokers only (Celery ignores it, with a warning, on others).
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "worker_disable_prefetch": True}
