"""docker-compose.yml, checked without a Docker engine (none runs where this project is built).

The file must parse, validate against the Compose specification's JSON schema after variable
interpolation (as `docker compose` does it), mount only paths that exist, document every variable
without a default in `.env.example`, match the services and commands docs/operate-the-dags.md lists, and build
the official Airflow image with the CPU-only torch. The `celery` profile adds Redis and Celery workers on the
same image; the scheduler's start script picks the CeleryExecutor when the profile's broker is there (run for
real here with a stand-in `airflow`). The PostgreSQL and Airflow init scripts run for
real against the test server.

`tests/data/compose-spec.json` is the Compose specification's schema from the compose-spec project
(github.com/compose-spec/compose-spec, Apache-2.0), as shipped in the `docker-compose` 1.29.2 wheel
on PyPI (`compose/config/compose_spec.json`), unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import psycopg2
import pytest
import yaml
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from recsys.config.settings import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
DOCKERFILE = PROJECT_ROOT / "docker" / "airflow.Dockerfile"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
SCHEMA = PROJECT_ROOT / "tests" / "data" / "compose-spec.json"
COMPOSE_GUIDE = PROJECT_ROOT / "docs" / "operate-the-dags.md"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
CELERY_SERVICES = ("redis", "airflow-worker")  # the `celery` profile
MOUNTED_CODE = ("dags", "plugins", "recsys", "sql", "templates")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR; $$ is a literal $
_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _variables(text: str) -> dict[str, str | None]:
    """Every variable the text uses, with its operator (None: no default, '-' / ':-': default, '?': required)."""
    found: dict[str, str | None] = {}
    for m in _VARIABLE.finditer(text):
        name = m.group("braced") or m.group("bare")
        if name:
            found.setdefault(name, m.group("op"))
            if m.group("op") in ("-", ":-"):
                found[name] = m.group("op")
    return found


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in the parsed file."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        if op in (":-", "-"):
            use_default = current is None or (op == ":-" and current == "")
            return arg if use_default else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise ValueError(f"required variable {name} is not set: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(sub, value)


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as `docker compose` sees it with .env.example's secrets filled in."""
    env = {name: value or f"test-{name.lower()}" for name, value in _env_example().items()}
    return _interpolate(raw, env)


def _command(service: dict[str, Any]) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else " ".join(str(cmd).split())


def test_it_parses_and_has_the_stack(raw: dict[str, Any]) -> None:
    assert set(raw["services"]) == {"postgres", "airflow-init", *AIRFLOW_SERVICES, *CELERY_SERVICES}
    in_profiles = {name: service.get("profiles") for name, service in raw["services"].items()}
    assert {name for name, profiles in in_profiles.items() if profiles} == set(CELERY_SERVICES)
    assert all(in_profiles[name] == ["celery"] for name in CELERY_SERVICES)
    assert {"pgdata", "recsys-models"} <= set(raw["volumes"])


def test_it_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    # The schema names draft 2019-09 by a URI jsonschema does not know ("http://.../draft/2019-09/schema#").
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_refuses_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["postgres"]["healthcheck"]["retry"] = 3
    broken["services"]["airflow-init"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_a_missing_secret_stops_interpolation(raw: dict[str, Any]) -> None:
    env = {name: value or "x" for name, value in _env_example().items()}
    del env["AIRFLOW_JWT_SECRET"]
    with pytest.raises(ValueError, match="AIRFLOW_JWT_SECRET"):
        _interpolate(raw, env)


SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|(^|_)KEY($|_)")
SECRETS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "RECSYS_DB_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET",
)


def test_no_password_or_secret_has_a_default() -> None:
    """Every use of a password or secret variable is `${VAR:?message}`: no default that works."""
    uses = [
        (m.group("braced") or m.group("bare"), m.group("op"), m.group(0))
        for m in _VARIABLE.finditer(COMPOSE.read_text())
        if m.group(0) != "$$"
    ]
    secret_uses = [u for u in uses if SECRET_NAME.search(u[0])]
    assert {name for name, _, _ in secret_uses} == set(SECRETS)
    loose = [text for _, op, text in secret_uses if op != ":?"]
    assert not loose, f"secrets with a default or allowed empty: {loose}"
    example = _env_example()
    assert all(name in example and example[name] == "" for name in SECRETS), ".env.example leaves them to fill"
    for script in ("docker/postgres/init-databases.sh", "docker/airflow-init.sh"):
        text = (PROJECT_ROOT / script).read_text()
        found = [m for m in _VARIABLE.finditer(text) if m.group(0) != "$$"]
        loose = [m.group(0) for m in found if SECRET_NAME.search(m.group(0)) and m.group("op") in ("-", ":-")]
        assert not loose, f"{script}: secrets with a default: {loose}"


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(raw: dict[str, Any], secret: str) -> None:
    env = {name: value or "x" for name, value in _env_example().items()}
    for missing in ({k: v for k, v in env.items() if k != secret}, {**env, secret: ""}):
        with pytest.raises(ValueError, match=secret):
            _interpolate(raw, missing)


def test_the_fernet_key_is_generated_never_empty(compose: dict[str, Any]) -> None:
    init = (PROJECT_ROOT / "docker" / "airflow-init.sh").read_text()
    for name in ("airflow-init", *AIRFLOW_SERVICES, "airflow-worker"):
        env = compose["services"][name]["environment"]
        assert "AIRFLOW__CORE__FERNET_KEY" not in env, f"{name}: an empty or fixed Fernet key"
        assert env["AIRFLOW__CORE__FERNET_KEY_CMD"] == f"cat {env['AIRFLOW_FERNET_KEY_FILE']}"
        key_dir = str(Path(env["AIRFLOW_FERNET_KEY_FILE"]).parent)
        volumes = {v.split(":")[1]: v.split(":")[0] for v in compose["services"][name]["volumes"]}
        assert volumes[key_dir] == "airflow-auth", f"{name}: the key's folder is the shared volume"
    assert init.index("Fernet.generate_key()") < init.index("airflow db migrate")


def test_postgres_is_published_on_the_loopback_only(compose: dict[str, Any]) -> None:
    assert compose["services"]["postgres"]["ports"] == ["127.0.0.1:5432:5432"]
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if name != "airflow-apiserver":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_variable_without_a_default_is_in_env_example() -> None:
    used = _variables(COMPOSE.read_text())
    documented = _env_example()
    commented = {
        m.group(1) for m in re.finditer(r"^#\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    }
    required = {name for name, op in used.items() if op not in ("-", ":-")}
    assert required, "the secrets have no default"
    assert required <= set(documented), f"not in .env.example: {sorted(required - set(documented))}"
    assert set(documented) | commented <= set(used), (
        f".env.example lists unused variables: {sorted((set(documented) | commented) - set(used))}"
    )
    defaulted = {name for name, op in used.items() if op in ("-", ":-")}
    assert defaulted <= commented, f"defaults not shown in .env.example: {sorted(defaulted - commented)}"


def test_every_bind_mount_and_build_path_exists(raw: dict[str, Any]) -> None:
    named = set(raw["volumes"])
    for name, service in raw["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert source.startswith(("./", "/")), f"{name}: {volume}: neither a named volume nor a path"
            assert (PROJECT_ROOT / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            context = PROJECT_ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {build['context']}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
    for script in ("docker/postgres/init-databases.sh", "docker/airflow-init.sh", "docker/airflow-scheduler.sh"):
        assert os.access(PROJECT_ROOT / script, os.X_OK), f"{script} is not executable"


def test_airflow_services_mount_the_code_and_find_dags_plugins_and_the_database(compose: dict[str, Any]) -> None:
    for name in ("airflow-init", *AIRFLOW_SERVICES, "airflow-worker"):
        service = compose["services"][name]
        targets = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        for folder in MOUNTED_CODE:
            assert targets[f"/opt/airflow/project/{folder}"] == f"./{folder}", (name, folder)
        assert "recsys-models" in {v.split(":")[0] for v in service["volumes"]}
        env = service["environment"]
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/project/dags"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/airflow/project/plugins"
        assert env["PYTHONPATH"] == "/opt/airflow/project"
        assert env["AIRFLOW_CONN_RECSYS_DB"] == "postgresql://recsys:test-recsys_db_password@postgres:5432/recsys"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert service["image"] == "recsys-airflow:latest"
        assert service["build"]["dockerfile"] == "docker/airflow.Dockerfile"


def test_healthchecks_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            continue
        check = service.get("healthcheck")
        assert check and check["test"], f"{name} has no healthcheck"
    assert services["airflow-init"]["restart"] == "no"
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "airflow-init": {"condition": "service_completed_successfully"},
        }
    assert services["airflow-apiserver"]["ports"] == ["8080:8080"]
    assert "/api/v2/monitor/health" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert services["airflow-worker"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "airflow-init": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }


# --- the celery profile -------------------------------------------------------------------------------


def test_the_celery_profile_runs_workers_on_the_same_image_with_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    redis, worker, scheduler = services["redis"], services["airflow-worker"], services["airflow-scheduler"]
    assert redis["image"].startswith("redis:") and "ports" not in redis  # the compose network only
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert _command(worker) == "celery worker"
    assert worker["deploy"]["replicas"] >= 2
    assert (worker["image"], worker["build"]) == (scheduler["image"], scheduler["build"])
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "celery@${HOSTNAME}" in worker["healthcheck"]["test"][1]  # its own container's worker
    for name in ("airflow-init", *AIRFLOW_SERVICES, "airflow-worker"):
        env = services[name]["environment"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert "AIRFLOW__CELERY__RESULT_BACKEND" not in env, f"{name}: results go to the metadata database"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        assert (
            env["AIRFLOW__API_AUTH__JWT_SECRET"]
            == services["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]
        ), f"{name}: one secret signs and checks the workers' task tokens"
    timeout = int(scheduler["environment"]["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"])
    assert timeout > 180 * 60, "longer than the longest task (train), or a running task is handed out again"
    assert _command(scheduler) == "bash /opt/airflow/project/docker/airflow-scheduler.sh"
    assert scheduler["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"  # without the profile


@pytest.mark.parametrize(
    ("broker_url", "executor", "expected"),
    [
        ("redis://localhost:6379/0", "LocalExecutor", "CeleryExecutor"),  # the profile's broker resolves
        ("redis://:s3cret@localhost:6379/0", "LocalExecutor", "CeleryExecutor"),
        ("redis://recsys-no-such-broker.invalid:6379/0", "LocalExecutor", "LocalExecutor"),  # no profile
        ("", "LocalExecutor", "LocalExecutor"),
        ("redis://localhost:6379/0", "KubernetesExecutor", "KubernetesExecutor"),  # an explicit choice stays
    ],
)
def test_the_scheduler_script_picks_the_executor(tmp_path: Path, broker_url: str, executor: str, expected: str) -> None:
    """docker/airflow-scheduler.sh run for real, with a stand-in `airflow` that reports what it was given."""
    if shutil.which("getent") is None:
        pytest.skip("needs getent (glibc), as in the Airflow image")
    stand_in = tmp_path / "bin" / "airflow"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\necho "airflow $* with $AIRFLOW__CORE__EXECUTOR"\n')
    stand_in.chmod(0o755)
    env = {
        "PATH": f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
    }
    script = PROJECT_ROOT / "docker" / "airflow-scheduler.sh"
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"airflow scheduler with {expected}"
    assert "s3cret" not in done.stdout


def _documented_services() -> dict[str, str]:
    text = COMPOSE_GUIDE.read_text()
    start = text.index("## Running with docker-compose")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, flags=re.MULTILINE)
    assert rows, "no service table in the docker-compose section of docs/operate-the-dags.md"
    return dict(rows)


def test_services_and_commands_match_the_guide(raw: dict[str, Any]) -> None:
    documented = _documented_services()
    actual = {name: _command(service) for name, service in raw["services"].items()}
    assert documented == actual


def test_the_image_is_airflow_3_3_2_with_cpu_torch() -> None:
    dockerfile = DOCKERFILE.read_text()
    requirements = (PROJECT_ROOT / "requirements.txt").read_text()
    airflow_pin = re.search(r"^apache-airflow==(\S+)", requirements, flags=re.MULTILINE).group(1)
    assert re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE) == [f"apache/airflow:{airflow_pin}"]
    assert airflow_pin == "3.3.2"
    torch_install = re.search(r"pip install[^\n]*--index-url (\S+) \\\n\s+\"([^\"]+)\"", dockerfile)
    assert torch_install, "torch is installed on its own from an index"
    assert torch_install.group(1) == "https://download.pytorch.org/whl/cpu"
    assert torch_install.group(2) == "$(grep -E '^torch==' /tmp/recsys-requirements.txt)"
    assert dockerfile.index("whl/cpu") < dockerfile.index("-r /tmp/recsys-requirements-image.txt")


def test_the_image_installs_requirements_minus_airflow_torch_and_pgserver(tmp_path: Path) -> None:
    """Runs the Dockerfile's own filter on requirements.txt."""
    dockerfile = DOCKERFILE.read_text()
    pattern = re.search(r"grep -vE '([^']+)' /tmp/recsys-requirements.txt", dockerfile).group(1)
    kept = subprocess.run(
        ["grep", "-vE", pattern, str(PROJECT_ROOT / "requirements.txt")], capture_output=True, text=True, check=True
    ).stdout
    names = {re.split(r"[=<>!~\[ ]", line)[0] for line in kept.splitlines() if line and not line.startswith("#")}
    assert not {n for n in names if n == "torch" or n == "pgserver" or n.startswith("apache-airflow")}
    assert not names & {"celery", "kombu", "redis"}, "the image's Celery stack is the one its provider came with"
    assert {"stable-baselines3", "gymnasium", "pandas", "numpy", "openpyxl", "psycopg2-binary", "jinja2"} <= names
    assert 'pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}"' in dockerfile


# --- the init scripts, for real --------------------------------------------------------------------


@pytest.fixture
def scratch_names(server_url: str) -> Any:
    """Unique role and database names on the test server, dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {
        "AIRFLOW_DB_USER": f"af_{tag}",
        "AIRFLOW_DB_PASSWORD": "af-pw",
        "AIRFLOW_DB_NAME": f"af_{tag}_db",
        "RECSYS_DB_USER": f"rs_{tag}",
        "RECSYS_DB_PASSWORD": "rs-pw",
        "RECSYS_DB_NAME": f"rs_{tag}_db",
        "RECSYS_SENDER_ROLE": f"rs_{tag}_sender",
        "RECSYS_ANALYST_ROLE": f"rs_{tag}_analyst",
    }
    yield names
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        for db in (names["AIRFLOW_DB_NAME"], names["RECSYS_DB_NAME"]):
            cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))
        for role in ("RECSYS_SENDER_ROLE", "RECSYS_ANALYST_ROLE", "AIRFLOW_DB_USER", "RECSYS_DB_USER"):
            cur.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(names[role])))
    admin.close()


def _psql_env(server_url: str) -> dict[str, str]:
    p = parse_dsn(server_url)
    env = dict(os.environ)
    env.update(PGHOST=p.get("host", "127.0.0.1"), PGPORT=str(p.get("port", "5432")), POSTGRES_USER=p.get("user", ""))
    if p.get("password"):
        env["PGPASSWORD"] = p["password"]
    return env


def test_postgres_init_script_creates_both_databases(server_url: str, scratch_names: dict[str, str]) -> None:
    if shutil.which("psql") is None or not parse_dsn(server_url).get("host", "").startswith(("127.", "localhost")):
        pytest.skip("needs psql and a TCP test server")
    env = {**_psql_env(server_url), **scratch_names}
    script = PROJECT_ROOT / "docker" / "postgres" / "init-databases.sh"
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    with psycopg2.connect(server_url) as conn, conn.cursor() as cur:
        cur.execute(
            "select datname, pg_get_userbyid(datdba) from pg_database where datname in (%s, %s) order by 1",
            (scratch_names["AIRFLOW_DB_NAME"], scratch_names["RECSYS_DB_NAME"]),
        )
        owners = dict(cur.fetchall())
        cur.execute(
            "select rolname, rolcanlogin, rolcreaterole, rolsuper from pg_roles where rolname in (%s, %s)",
            (scratch_names["AIRFLOW_DB_USER"], scratch_names["RECSYS_DB_USER"]),
        )
        roles = {r[0]: r[1:] for r in cur.fetchall()}
    conn.close()
    assert owners == {
        scratch_names["AIRFLOW_DB_NAME"]: scratch_names["AIRFLOW_DB_USER"],
        scratch_names["RECSYS_DB_NAME"]: scratch_names["RECSYS_DB_USER"],
    }
    assert roles[scratch_names["AIRFLOW_DB_USER"]] == (True, False, False)
    assert roles[scratch_names["RECSYS_DB_USER"]] == (True, True, False)

    # the postgres service's healthcheck passes now, and fails while a database is missing
    raw = yaml.safe_load(COMPOSE.read_text())
    kind, check = raw["services"]["postgres"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    check = check.replace("$$", "$")
    assert subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=60).returncode == 0
    missing = {**env, "AIRFLOW_DB_NAME": scratch_names["AIRFLOW_DB_NAME"] + "_missing"}
    assert subprocess.run(["sh", "-c", check], env=missing, capture_output=True, timeout=60).returncode != 0


@pytest.mark.slow
def test_airflow_init_script_prepares_metadata_login_and_campaign_schema(
    server_url: str, scratch_names: dict[str, str], tmp_path: Path
) -> None:
    """The init job's script, run here with the venv's airflow, SQLite metadata and the test server."""
    if shutil.which("psql") is None or not parse_dsn(server_url).get("host", "").startswith(("127.", "localhost")):
        pytest.skip("needs psql and a TCP test server")
    env = {**_psql_env(server_url), **scratch_names}
    subprocess.run(
        ["bash", str(PROJECT_ROOT / "docker" / "postgres" / "init-databases.sh")],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    p = parse_dsn(server_url)
    recsys_url = (
        f"postgresql://{scratch_names['RECSYS_DB_USER']}:{scratch_names['RECSYS_DB_PASSWORD']}"
        f"@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{scratch_names['RECSYS_DB_NAME']}"
    )
    passwords = tmp_path / "auth" / "passwords.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="false",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW_ADMIN_USER="admin",
        AIRFLOW_ADMIN_PASSWORD="s3cret",
        AIRFLOW_CONN_RECSYS_DB=recsys_url,
        RECSYS_SENDER_ROLE=scratch_names["RECSYS_SENDER_ROLE"],
        RECSYS_ANALYST_ROLE=scratch_names["RECSYS_ANALYST_ROLE"],
        AIRFLOW_FERNET_KEY_FILE=str(tmp_path / "auth" / "fernet.key"),
        AIRFLOW__CORE__FERNET_KEY_CMD=f"cat {tmp_path / 'auth' / 'fernet.key'}",
    )
    script = PROJECT_ROOT / "docker" / "airflow-init.sh"
    keys = []
    for _ in range(2):  # idempotent: `docker compose up` may run it again
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        keys.append((tmp_path / "auth" / "fernet.key").read_text().strip())
    assert "airflow-init: done" in done.stdout
    from cryptography.fernet import Fernet

    assert keys[0] == keys[1] and Fernet(keys[0].encode())  # made once, a valid key, then kept
    assert (tmp_path / "auth" / "fernet.key").stat().st_mode & 0o777 == 0o600
    airflow = str(Path(sys.executable).with_name("airflow"))
    used = subprocess.run(
        [airflow, "config", "get-value", "core", "fernet_key"], env=env, capture_output=True, text=True, timeout=120
    )
    assert used.stdout.strip().splitlines()[-1] == keys[0]  # what Airflow encrypts with
    assert json.loads(passwords.read_text()) == {"admin": "s3cret"}
    assert (tmp_path / "airflow.db").stat().st_size > 0
    with psycopg2.connect(make_dsn(recsys_url)) as conn, conn.cursor() as cur:
        cur.execute("select to_regclass('recsys.campaign_offers'), to_regclass('recsys.v_campaign_runs')")
        assert cur.fetchone() == ("recsys.campaign_offers", "recsys.v_campaign_runs")
    conn.close()
    del env["AIRFLOW_ADMIN_PASSWORD"]
    refused = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "AIRFLOW_ADMIN_PASSWORD" in refused.stderr
