#!/usr/bin/env bash
# The airflow-scheduler service of docker-compose.yml: picks the executor, then runs the scheduler.
#
# `docker compose up` runs the tasks in the scheduler's container (LocalExecutor, the file's
# default). `docker compose --profile celery up` adds a Redis broker and Celery workers: the
# broker's host (from AIRFLOW__CELERY__BROKER_URL, `redis` on the compose network) then resolves,
# and the scheduler hands every task to the workers through it (CeleryExecutor). An executor other
# than LocalExecutor set in the environment is kept as it is.
set -euo pipefail

# redis://[user:password@]host[:port][/db] -> host (the password is never printed)
broker_host() {
    local rest=${1#*://}
    rest=${rest##*@}
    rest=${rest%%/*}
    echo "${rest%%:*}"
}

executor=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
host=$(broker_host "${AIRFLOW__CELERY__BROKER_URL:-}")
if [ "$executor" = LocalExecutor ] && [ -n "$host" ] && getent hosts "$host" >/dev/null; then
    executor=CeleryExecutor
    echo "airflow-scheduler: the Celery broker's host ${host} resolves (the celery profile is up): CeleryExecutor"
else
    echo "airflow-scheduler: ${executor}"
fi
export AIRFLOW__CORE__EXECUTOR=$executor
exec airflow scheduler "$@"
