"""The docker-compose deployment (docker-compose.yml, Dockerfile, .dockerignore, deploy/), validated
without a Docker engine (none runs on these machines; docs/deployment.md says so):

- the compose file passes `docker-compose config` (Debian's docker-compose 1.29, installed by
  scripts/setup.sh; else the Compose v2 plugin `docker compose`), with every profile, and refuses
  to resolve without the required password;
- its structure: every service has a health check, a restart policy and pinned images; start-up
  order waits on health; volumes are named and declared; the ports; no secret in the file;
- the Prometheus and Alertmanager files, laid out in a temporary directory exactly as the compose
  file mounts them into the containers, pass `promtool check config` (with the shipped rules) and
  `amtool check-config`; the compose Alertmanager routing is the shipped one;
- the environment and YAML the compose file gives syncwatch are accepted by its settings;
- the Dockerfile installs the project as scripts/setup.sh does (pip from pyproject.toml) and its
  build context holds everything that install needs: a wheel is built from exactly those files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import prometheus
from tests.support.examples import PROJECT

COMPOSE = PROJECT / "docker-compose.yml"
DOCKERFILE = PROJECT / "Dockerfile"
DOCKERIGNORE = PROJECT / ".dockerignore"
SHIPPED_ALERTMANAGER = PROJECT / "alerts" / "alertmanager" / "alertmanager.yml"
PROFILES = ("brokers", "demo")
#: Values for the variables the compose file reads from `.env`: what a user writes there.
TEST_ENV = {
    "POSTGRES_PASSWORD": "test-password-not-a-secret",
    "SYNCWATCH_DASHBOARD_KEY": "sw_test_viewer",
    "SYNCWATCH_INGEST_KEY": "sw_test_ingest",
}
#: The port each service publishes on the host, and the container port behind it.
PUBLISHED = {
    "syncwatch": 8080,
    "dashboard": 8501,
    "prometheus": 9090,
    "alertmanager": 9093,
    "jaeger": 16686,
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:?[-?][^}]*)?\}$")


@cache
def compose_command() -> tuple[str, ...] | None:
    """Debian's docker-compose, else the Compose v2 plugin; None when neither works here."""
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ("docker", "compose")
    return None


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither docker-compose (Debian's package, installed by scripts/setup.sh) nor the "
            "`docker compose` plugin is installed: the compose file cannot be validated"
        )
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    # A clean environment: the user's shell (or a local .env) must not fill in what is missing.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(PROJECT),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE),
            *profiles,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("".join(f"{key}={value}\n" for key, value in TEST_ENV.items()))
    return path


@pytest.fixture(scope="module")
def resolved(env_file: Path) -> dict[str, Any]:
    """The compose file as the tool resolves it (interpolated, paths absolute, every profile)."""
    result = compose(env_file, "config")
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a resolved service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith(("/", ".")) else "volume"
        else:
            source, target, kind = volume.get("source", ""), volume["target"], volume["type"]
        if kind == "bind":
            found[target] = Path(source)
    return found


def mirror(service: dict[str, Any], root: Path) -> None:
    """Copy a service's bind mounts under root at their container paths."""
    for target, source in mounts(service).items():
        destination = root / target.lstrip("/")
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, destination)


# -- the compose file ------------------------------------------------------------------------------


def test_compose_file_is_valid_with_every_profile(env_file: Path) -> None:
    result = compose(env_file, "config", "-q")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    services = compose(env_file, "config", "--services")
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {
        "syncwatch",
        "dashboard",
        "consume",
        "simulator",
        "postgres",
        "prometheus",
        "alertmanager",
        "jaeger",
    }


def test_the_database_password_is_required(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose(empty, "config", "-q")
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in result.stdout + result.stderr


def test_profiles_keep_the_optional_services_out_of_a_plain_start(raw: dict[str, Any]) -> None:
    profiles = {name: service.get("profiles") for name, service in raw["services"].items()}
    assert profiles.pop("consume") == ["brokers"]
    assert profiles.pop("simulator") == ["demo"]
    assert all(value is None for value in profiles.values()), profiles


def test_every_service_is_health_checked_restarted_and_pinned(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        assert service.get("restart") in {"unless-stopped", "always", "on-failure"}, name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"


def test_start_up_waits_on_health(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_healthy"
            if dependency == "jaeger":
                expected = "service_started"  # traces wait in the store (docs/tracing.md)
            assert condition["condition"] == expected, (name, dependency)
    assert services["syncwatch"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["dashboard"]["depends_on"]["syncwatch"]["condition"] == "service_healthy"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert any("/readyz" in part for part in services["syncwatch"]["healthcheck"]["test"])
    assert any("/_stcore/health" in part for part in services["dashboard"]["healthcheck"]["test"])


def test_named_volumes_are_declared(raw: dict[str, Any]) -> None:
    declared = set(raw.get("volumes") or {})
    used = set()
    for service in raw["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith(("/", ".", "$")):
                used.add(source)
    assert used == declared
    assert {"postgres-data", "prometheus-data", "alertmanager-data"} <= declared
    data_dirs = {
        "postgres": "/var/lib/postgresql/data",
        "prometheus": "/prometheus",
        "alertmanager": "/alertmanager",
    }
    for name, path in data_dirs.items():
        assert f"{name}-data:{path}" in raw["services"][name]["volumes"], name


def test_published_ports(resolved: dict[str, Any]) -> None:
    published = {}
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, str):
                host, _, container = port.rpartition(":")
                published[name] = (int(host.split(":")[-1]), int(container))
            else:
                published[name] = (int(port["published"]), int(port["target"]))
    assert published == {name: (port, port) for name, port in PUBLISHED.items()}
    # The database and the consumers are reached inside the compose network only.
    assert "ports" not in resolved["services"]["postgres"]


def test_no_secret_is_written_in_the_file(raw: dict[str, Any]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"://[^/\s@:]+:[^/\s@]+@", text), "a URL with a password"
    environments = [service.get("environment", {}) for service in raw["services"].values()]
    environments += [value for key, value in raw.items() if key.startswith("x-")]
    for environment in environments:
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.match(str(value)), f"{key} must come from .env: {value!r}"
    for secret in raw["secrets"].values():
        assert set(secret) == {"file"}, secret  # a file outside git, never an inline value
    ignored = (PROJECT / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and "/secrets/" in ignored
    dockerignored = DOCKERIGNORE.read_text(encoding="utf-8").split()
    assert ".env" in dockerignored and "secrets" in dockerignored


def test_the_simulator_talks_to_the_api_and_answers_replays(resolved: dict[str, Any]) -> None:
    simulator = resolved["services"]["simulator"]
    assert simulator["network_mode"] == "service:syncwatch"
    command = simulator["command"]
    assert command[:2] == ["syncwatch", "simulate"]
    assert command[command.index("--api-url") + 1] == "http://127.0.0.1:8080"
    assert simulator["environment"]["SYNCWATCH_INGEST_KEY"] == TEST_ENV["SYNCWATCH_INGEST_KEY"]
    demo = yaml.safe_load((PROJECT / "deploy" / "syncwatch" / "demo.yaml").read_text())
    # every firm's middleware sources (syncwatch/simulator/firm.py) replay to the fake middleware
    targets = demo["replay"]["targets"]
    assert set(targets) == {"middleware/mulesoft", "middleware/boomi"}
    for target in targets.values():
        assert target["http"]["url"] == "http://127.0.0.1:8091/replay/{execution_id}"


# -- Prometheus and Alertmanager, as mounted ------------------------------------------------------


@pytest.mark.prometheus
def test_prometheus_config_and_rules_pass_promtool(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    service = resolved["services"]["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    assert "--enable-feature=exemplar-storage" in service["command"]
    assert all(mounts(service)[target].exists() for target in mounts(service))
    mirror(service, tmp_path)
    config = tmp_path / flags["--config.file"].lstrip("/")
    result = subprocess.run(
        [prometheus.binary("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr

    loaded = yaml.safe_load(config.read_text())
    jobs = {job["job_name"]: job for job in loaded["scrape_configs"]}
    assert jobs["syncwatch"]["static_configs"] == [{"targets": ["syncwatch:8080"]}]
    targets = loaded["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]


@pytest.mark.prometheus
def test_alertmanager_config_passes_amtool_and_routes_as_shipped(
    resolved: dict[str, Any], tmp_path: Path
) -> None:
    service = resolved["services"]["alertmanager"]
    flags = dict(arg.split("=", 1) for arg in service["command"] if "=" in arg)
    mirror(service, tmp_path)
    config = tmp_path / flags["--config.file"].lstrip("/")
    result = subprocess.run(
        [prometheus.binary("amtool"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"

    ours = yaml.safe_load(config.read_text())
    shipped = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())
    for key in ("global", "route", "inhibit_rules"):
        assert ours[key] == shipped[key], key
    assert [r["name"] for r in ours["receivers"]] == [r["name"] for r in shipped["receivers"]]
    (receiver,) = [r for r in ours["receivers"] if r["name"] == "syncwatch"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == "http://syncwatch:8080/v1/alertmanager"
    secret = service["secrets"][0]
    name = secret if isinstance(secret, str) else secret["source"]
    credentials = webhook["http_config"]["authorization"]["credentials_file"]
    assert credentials == f"/run/secrets/{name}"
    assert name in resolved["secrets"]


# -- what syncwatch is given -----------------------------------------------------------------------


@pytest.mark.parametrize("config_file", ["syncwatch.yaml", "demo.yaml"])
@pytest.mark.parametrize("service_name", ["syncwatch", "consume"])
def test_syncwatch_accepts_its_compose_settings(
    resolved: dict[str, Any], service_name: str, config_file: str
) -> None:
    service = resolved["services"][service_name]
    environment = {key: str(value) for key, value in service["environment"].items()}
    container_config = Path(environment["SYNCWATCH_CONFIG"]).parent / config_file
    host_config = mounts(service)[str(container_config.parent)] / container_config.name
    assert host_config.is_file()
    env = {
        "PATH": os.environ["PATH"],
        **environment,
        "SYNCWATCH_CONFIG": str(host_config),
    }
    script = (
        "import json; from core.settings import load_settings; s = load_settings(); "
        "print(json.dumps({'db': s.resolved_database_url, 'host': s.host, 'port': s.port, "
        "'tracing': [s.tracing.enabled, s.tracing.endpoint], "
        "'targets': sorted(s.replay.model_dump().get('targets') or {})}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["db"] == "postgresql+psycopg://syncwatch@postgres:5432/syncwatch"
    assert (settings["host"], settings["port"]) == ("0.0.0.0", 8080)  # noqa: S104 (a container)
    assert settings["tracing"] == [True, "http://jaeger:4318/v1/traces"]
    demo = ["middleware/boomi", "middleware/mulesoft"]
    expected_targets = demo if config_file == "demo.yaml" else []
    assert settings["targets"] == expected_targets
    # the password reaches libpq as PGPASSWORD, from .env
    assert environment["PGPASSWORD"] == TEST_ENV["POSTGRES_PASSWORD"]


# -- the Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, rest = stripped.partition(" ")
            found.append((instruction.upper(), rest.strip()))
    return found


def copied_paths() -> list[str]:
    paths = []
    for instruction, rest in dockerfile_instructions():
        if instruction == "COPY":
            paths += rest.split()[:-1]
    return paths


def packages() -> list[str]:
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*") for pattern in include})


def test_dockerfile_installs_like_the_setup_script() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for instruction, rest in instructions if instruction == "RUN")
    assert re.search(r"python -m pip install \.(\s|$)", runs), "pip install . (the pyproject)"
    setup = (PROJECT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "pip install -q -e '.[dev]'" in setup  # the same install, editable and with dev tools
    users = [rest for instruction, rest in instructions if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert any(
        instruction == "HEALTHCHECK" and "/readyz" in rest for instruction, rest in instructions
    )
    copied = copied_paths()
    assert {"pyproject.toml", "README.md"} <= set(copied)
    assert set(packages()) <= set(copied), "COPY every package of [tool.setuptools.packages.find]"


def dockerignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    for pattern in patterns:
        bare = pattern.lstrip("/")
        if bare.startswith("**/"):
            if any(fnmatch.fnmatch(part, bare[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[: i + 1]), bare) for i in range(len(parts))):
            return True
    return False


@pytest.mark.slow
def test_the_build_context_builds_the_whole_project(tmp_path: Path) -> None:
    """Exactly the files the Dockerfile copies, minus .dockerignore, build the project with its
    package data (the rules, the migrations, the presets, the dashboard's config)."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    for copied in copied_paths():
        assert not dockerignored(copied, patterns), f"{copied} is copied but .dockerignore'd"
        source = PROJECT / copied
        for path in [source] if source.is_file() else sorted(source.rglob("*")):
            relative = path.relative_to(PROJECT).as_posix()
            if path.is_file() and not dockerignored(relative, patterns):
                destination = context / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, destination)
    # setuptools' build, as `pip install .` runs it (offline: no build isolation, no wheel).
    build = tmp_path / "build"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build",
            "--build-base",
            str(build),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=context,
    )
    assert result.returncode == 0, result.stderr
    lib = build / "lib"
    names = {path.relative_to(lib).as_posix() for path in lib.rglob("*") if path.is_file()}
    for needed in (
        "syncwatch/cli.py",
        "alerts/rules/syncwatch.rules.yml",
        "alerts/alertmanager/alertmanager.yml",
        "core/migrations/script.py.mako",
        "core/migrations/env.py",
        "dashboard/.streamlit/config.toml",
        "dashboard/app.py",
    ):
        assert needed in names, needed
    assert any(name.startswith("collector/presets/") for name in names)
    migrations = {p.name for p in (PROJECT / "core" / "migrations" / "versions").glob("*.py")}
    assert migrations and {f"core/migrations/versions/{m}" for m in migrations} <= names
    for package in packages():
        assert f"{package}/__init__.py" in names, package
