#!/usr/bin/env bash
# PostgreSQL's first start (docker-entrypoint-initdb.d): the Airflow metadata database and the
# recsys campaign database, each owned by its own login role. The recsys role may create roles:
# `recsys db migrate` creates the sender and analyst roles. The passwords have no default.
set -euo pipefail

create_database() {
    local user=$1 password=$2 database=$3 role_options=$4
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        -v user="$user" -v password="$password" -v database="$database" -v options="$role_options" <<'SQL'
select format('create role %I login %s password %L', :'user', :'options', :'password') \gexec
select format('create database %I owner %I', :'database', :'user') \gexec
SQL
}

create_database "${AIRFLOW_DB_USER:-airflow}" "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}" "${AIRFLOW_DB_NAME:-airflow}" "nocreaterole"
create_database "${RECSYS_DB_USER:-recsys}" "${RECSYS_DB_PASSWORD:?RECSYS_DB_PASSWORD is not set}" "${RECSYS_DB_NAME:-recsys}" "createrole"
