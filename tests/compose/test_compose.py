"""docker-compose.yaml: validates offline with docker-compose, and keeps its safety properties.

No Docker engine is needed: `docker-compose config` (Debian's docker-compose 1.29, apt package
`docker-compose`) only parses, interpolates and validates the file against the compose schema.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW_SERVICES = {
    "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-init",
}
REQUIRED_SERVICES = AIRFLOW_SERVICES | {"postgres", "warehouse", "lms", "lrs"}
#: The CeleryExecutor's parts, each behind a profile: a plain `up` runs the LocalExecutor without them.
CELERY_SERVICES = {"redis": "celery", "airflow-worker": "celery", "flower": "flower"}

#: Dummy values for the variables the file requires (``${VAR:?…}``); distinct so a mix-up shows.
DUMMY_ENV = {
    "AIRFLOW_JWT_SECRET": "dummy-jwt-secret",
    "AIRFLOW_API_SECRET_KEY": "dummy-api-secret-key",
    "AIRFLOW_FERNET_KEY": "dummy-fernet-key",
    "AIRFLOW_DB_PASSWORD": "dummy-airflow-db-password",
    "WAREHOUSE_PASSWORD": "dummy-warehouse-password",
    "LMS_TOKEN": "dummy-lms-token",
    "LRS_PASSWORD": "dummy-lrs-password",
    "AIRFLOW_UID": "1000",
}

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|CREDENTIAL", re.IGNORECASE)
# A whole value that is a single ${VAR} / ${VAR:?message} reference (no default value).
REQUIRED_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
VAR_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
URI_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>[^@\s]*)@", re.IGNORECASE)

docker_compose = shutil.which("docker-compose")
needs_docker_compose = pytest.mark.skipif(
    docker_compose is None,
    reason="docker-compose binary not installed (apt-get install -y --no-install-recommends docker-compose)",
)


# -- helpers -----------------------------------------------------------------------------------------
def _raw() -> dict[str, Any]:
    """The file as written (PyYAML resolves the `<<: *anchor` merges), before interpolation."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _run_config(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    # A clean environment and an empty --env-file: the result must not depend on the developer's
    # shell or on a real .env next to the compose file.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    assert docker_compose is not None
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "--env-file", str(empty_env_file), "config", *extra],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )


def _host_ips(ports: list[Any]) -> list[tuple[str, str]]:
    """(port spec, host ip) for each published port, short ("ip:host:container") or long syntax."""
    out = []
    for p in ports:
        if isinstance(p, dict):
            out.append((json.dumps(p, sort_keys=True), str(p.get("host_ip", ""))))
            continue
        spec = str(p)
        # Strip a ${VAR:-default} so its ':' does not count as a separator.
        plain = VAR_REF.sub(lambda m: m.group("arg") if m.group("op") == ":-" else "X", spec)
        parts = plain.split("/")[0].split(":")
        out.append((spec, parts[0] if len(parts) == 3 else ""))
    return out


def _volume_parts(volume: Any) -> list[str]:
    """source, target[, mode] of a short-syntax volume; ${VAR:-default} replaced by its default."""
    plain = VAR_REF.sub(lambda m: m.group("arg") if m.group("op") == ":-" else "X", str(volume))
    return plain.split(":")


# -- offline validation --------------------------------------------------------------------------------
@needs_docker_compose
def test_docker_compose_config_validates(tmp_path):
    proc = _run_config(tmp_path, DUMMY_ENV, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_docker_compose
def test_resolved_config_binds_localhost_and_shares_the_jwt_secret(tmp_path):
    proc = _run_config(tmp_path, DUMMY_ENV)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    assert REQUIRED_SERVICES <= set(services)
    for name, svc in services.items():
        for spec, ip in _host_ips(svc.get("ports") or []):
            assert ip == "127.0.0.1", f"{name}: port {spec} is not bound to 127.0.0.1"
    assert _host_ips(services["airflow-apiserver"]["ports"]) == [("127.0.0.1:8080:8080/tcp", "127.0.0.1")]
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == DUMMY_ENV["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    # The connections are built from the secrets, and the LMS one is valid JSON.
    env = _env(services["airflow-scheduler"])
    lms = json.loads(env["AIRFLOW_CONN_HRLMS_LMS"])
    assert lms == {"conn_type": "http", "host": "http://lms:8080", "password": DUMMY_ENV["LMS_TOKEN"]}
    assert env["AIRFLOW_CONN_HRLMS_WAREHOUSE"] == (
        f"postgresql://hrlms:{DUMMY_ENV['WAREHOUSE_PASSWORD']}@warehouse:5432/warehouse")
    assert _env(services["lms"])["LMS_TOKEN"] == DUMMY_ENV["LMS_TOKEN"]
    assert _env(services["warehouse"])["POSTGRES_PASSWORD"] == DUMMY_ENV["WAREHOUSE_PASSWORD"]
    assert _env(services["postgres"])["POSTGRES_PASSWORD"] == DUMMY_ENV["AIRFLOW_DB_PASSWORD"]


@needs_docker_compose
def test_celery_profile_runs_every_component_on_the_celery_executor(tmp_path):
    """`AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery up`: every Airflow component on Celery, a
    scalable worker on the DAGs' queues, Redis not published, Flower on 127.0.0.1 only."""
    env = {**DUMMY_ENV, "AIRFLOW_EXECUTOR": "CeleryExecutor", "COMPOSE_PROFILES": "celery,flower"}
    assert _run_config(tmp_path, env, "-q").returncode == 0
    proc = _run_config(tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    for name in AIRFLOW_SERVICES | {"airflow-worker", "flower"}:
        env_ = _env(services[name])
        assert env_["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env_["AIRFLOW__API_AUTH__JWT_SECRET"] == DUMMY_ENV["AIRFLOW_JWT_SECRET"], name
        assert env_["AIRFLOW__CELERY__RESULT_BACKEND"] == (
            f"db+postgresql://airflow:{DUMMY_ENV['AIRFLOW_DB_PASSWORD']}@postgres/airflow"), name
    worker = services["airflow-worker"]
    argv = worker["command"] if isinstance(worker["command"], list) else worker["command"].split()
    assert argv[:2] == ["celery", "worker"]
    assert set(argv[argv.index("--queues") + 1].split(",")) == {"default", "warehouse", "lms"}
    assert "container_name" not in worker and not worker.get("ports"), "--scale airflow-worker=N needs both"
    for dep in ("redis", "warehouse", "lms", "airflow-apiserver"):
        assert dep in worker["depends_on"], dep
    assert not services["redis"].get("ports")
    assert _host_ips(services["flower"]["ports"]) == [("127.0.0.1:5555:5555/tcp", "127.0.0.1")]
    narrowed = _run_config(tmp_path, {**env, "AIRFLOW_WORKER_QUEUES": "default,lms"})
    assert "--queues default,lms" in narrowed.stdout


@needs_docker_compose
@pytest.mark.parametrize("missing", sorted(k for k in DUMMY_ENV if k != "AIRFLOW_UID"))
def test_every_secret_is_required(tmp_path, missing):
    """No secret has a default: leaving one out stops `config` with a message naming it."""
    env = {k: v for k, v in DUMMY_ENV.items() if k != missing}
    proc = _run_config(tmp_path, env, "-q")
    assert proc.returncode != 0
    assert missing in proc.stderr


# -- properties of the file as written ----------------------------------------------------------------
def test_services_and_executor():
    services = _raw()["services"]
    assert REQUIRED_SERVICES <= set(services), sorted(REQUIRED_SERVICES - set(services))
    for name in REQUIRED_SERVICES:
        assert not services[name].get("profiles"), f"{name} must start with a plain `up`"
    for name, profile in CELERY_SERVICES.items():
        assert services[name]["profiles"] == [profile], name
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["warehouse"]["image"] == "postgres:16"
    # Separate databases with separate volumes.
    pg_vols = {_volume_parts(v)[0] for v in services["postgres"]["volumes"]}
    wh_vols = {_volume_parts(v)[0] for v in services["warehouse"]["volumes"]}
    assert "warehouse-db-volume" in wh_vols and not pg_vols & wh_vols
    assert any("docker/warehouse/init.sql:/docker-entrypoint-initdb.d/" in str(v)
               for v in services["warehouse"]["volumes"])
    for name in AIRFLOW_SERVICES | {"airflow-worker", "flower"}:
        env = _env(services[name])
        # LocalExecutor unless AIRFLOW_EXECUTOR says otherwise, the same expression in every component
        assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}", name
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:${AIRFLOW_DB_PASSWORD:?"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].endswith("@postgres/airflow"), name


def test_published_ports_bind_localhost_only():
    services = _raw()["services"]
    published = 0
    for name, svc in services.items():
        assert "network_mode" not in svc or svc["network_mode"] != "host", f"{name}: host networking"
        for spec, ip in _host_ips(svc.get("ports") or []):
            published += 1
            assert ip == "127.0.0.1", f"{name}: port {spec!r} is not bound to 127.0.0.1"
    assert published >= 1  # at least the api-server


def test_airflow_services_share_one_jwt_secret_expression():
    services = _raw()["services"]
    airflow = AIRFLOW_SERVICES | {"airflow-worker", "flower"}
    secrets = {name: _env(services[name]).get("AIRFLOW__API_AUTH__JWT_SECRET") for name in airflow}
    assert None not in secrets.values(), secrets
    assert len(set(secrets.values())) == 1, secrets
    (expr,) = set(secrets.values())
    assert REQUIRED_REF.match(expr) and "AIRFLOW_JWT_SECRET" in expr, expr
    # The other shared settings must agree as well, or components reject each other's tokens.
    for key in ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert len({_env(services[n]).get(key) for n in airflow}) == 1, key


def test_mounts_and_project_environment():
    services = _raw()["services"]
    for name in AIRFLOW_SERVICES | {"airflow-worker"}:
        svc = services[name]
        targets = {_volume_parts(v)[1] for v in svc["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/dbt_project",
                "/opt/airflow/expectations", "/opt/airflow/landing"} <= targets, name
        env = _env(svc)
        assert "/opt/airflow/plugins" in env["PYTHONPATH"].split(":"), name
        assert env["HRLMS_LANDING_DIR"] == "/opt/airflow/landing"
        assert env["HRLMS_MAPPING"] == "/opt/airflow/plugins/hrlms/mappings/synthetic_hr.yaml"
        assert env["AIRFLOW_CONN_HRLMS_WAREHOUSE"].endswith("@warehouse:5432/warehouse")
        assert "http://lms:8080" in env["AIRFLOW_CONN_HRLMS_LMS"]
    assert (REPO / "plugins" / "hrlms" / "mappings" / "synthetic_hr.yaml").is_file()


def test_airflow_image_is_built_from_the_pinned_base_under_its_own_name():
    common = _raw()["services"]["airflow-scheduler"]
    dockerfile = REPO / common["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "apache/airflow:3.3.2-python3.11" in text
    assert "-r /opt/hrlms-build/requirements.txt -c /opt/hrlms-build/constraints.txt" in text
    # A build tagged like its base image would become the base of the next build.
    assert "apache/airflow" not in common["image"], common["image"]
    lms_dockerfile = (REPO / _raw()["services"]["lms"]["build"]["dockerfile"]).read_text()
    assert "scim2-server==0.8.3" in lms_dockerfile and "python:3.11-slim" in lms_dockerfile


def _walk_strings(node: Any, path: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_strings(v, f"{path}[{i}]")
    elif node is not None:
        yield path, str(node)


def test_no_literal_secrets():
    data = _raw()
    for path, value in _walk_strings(data):
        key = path.rsplit(".", 1)[-1]
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            assert REQUIRED_REF.match(value), f"{path}: secret-looking setting with a literal value"
        uri = URI_PASSWORD.match(value)
        if uri:
            assert REQUIRED_REF.match(uri.group("password")), f"{path}: URI with a literal password"
        for m in re.finditer(r'"(password|token|secret)"\s*:\s*"(?P<v>[^"]*)"', value, re.IGNORECASE):
            assert REQUIRED_REF.match(m.group("v")), f"{path}: JSON with a literal {m.group(1)}"
    # Secret variables are required (${VAR:?…}), never given a fallback (${VAR:-literal}).
    text = COMPOSE_FILE.read_text()
    for m in VAR_REF.finditer(text):
        if SECRET_NAME.search(m.group("name")):
            assert m.group("op") in (":?", "?"), f"{m.group(0)}: a secret with a default value"


def test_env_example_lists_every_required_variable_with_placeholders():
    required = {m.group("name") for m in VAR_REF.finditer(COMPOSE_FILE.read_text())
                if m.group("op") in (":?", "?")}
    assert required == {k for k in DUMMY_ENV if k != "AIRFLOW_UID"}
    example: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            example[k.strip()] = v.strip()
    assert required <= set(example), sorted(required - set(example))
    for name in required:
        assert example[name] == "change-me", f".env.example: {name} must be a placeholder"


def test_plugins_airflowignore_hides_the_hrlms_package():
    """Airflow's plugin loader would import every .py file of plugins/hrlms/ under its bare stem."""
    pytest.importorskip("airflow")
    from airflow._shared.module_loading import find_path_from_directory

    ignore = REPO / "plugins" / ".airflowignore"
    assert "hrlms/" in [line.strip() for line in ignore.read_text().splitlines()]
    # Core honours [core] dag_ignore_file_syntax; the Task SDK's loader always uses glob.
    for syntax in ("glob", "regexp"):
        found = [p for p in find_path_from_directory(str(REPO / "plugins"), ".airflowignore", syntax)
                 if p.endswith(".py")]
        assert found == [], (syntax, found[:5])
