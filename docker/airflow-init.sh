#!/usr/bin/env bash
# The airflow-init service of docker-compose.yml: runs once before the other Airflow services.
# Airflow's Fernet key, Airflow's metadata schema, the admin login of the simple auth manager, the
# campaign database's schema and roles. Every step is idempotent, so `docker compose up` may run it
# again.
set -euo pipefail

: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD (see .env.example)}"
: "${AIRFLOW_CONN_RECSYS_DB:?AIRFLOW_CONN_RECSYS_DB (the recsys_db connection) is not set}"
: "${AIRFLOW_FERNET_KEY_FILE:?AIRFLOW_FERNET_KEY_FILE (where the Fernet key is kept) is not set}"

# First, before anything reads Airflow's configuration (AIRFLOW__CORE__FERNET_KEY_CMD cats this
# file): a key made once and kept, since the metadata database's secrets are encrypted with it.
if [ ! -s "${AIRFLOW_FERNET_KEY_FILE}" ]; then
    echo "airflow-init: generating Airflow's Fernet key (${AIRFLOW_FERNET_KEY_FILE})"
    mkdir -p "$(dirname "${AIRFLOW_FERNET_KEY_FILE}")"
    (
        umask 077
        python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())" \
            > "${AIRFLOW_FERNET_KEY_FILE}.new"
    )
    mv "${AIRFLOW_FERNET_KEY_FILE}.new" "${AIRFLOW_FERNET_KEY_FILE}"
fi

echo "airflow-init: migrating the Airflow metadata database"
airflow db migrate

echo "airflow-init: the simple auth manager's admin login (${AIRFLOW_ADMIN_USER:-admin})"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
passwords = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
passwords[os.environ.get("AIRFLOW_ADMIN_USER") or "admin"] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.write_text(json.dumps(passwords) + "\n")
path.chmod(0o600)
PY

echo "airflow-init: migrating the campaign database (recsys_db)"
RECSYS_DATABASE_URL="${AIRFLOW_CONN_RECSYS_DB}" python -m recsys db migrate

echo "airflow-init: done"
