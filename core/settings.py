"""One typed settings object, read from ``SYNCWATCH_*`` environment variables and an optional YAML
file (``SYNCWATCH_CONFIG``). Environment variables win over the file. Bad configuration raises
:class:`core.errors.ConfigError` naming the key, so start-up stops with a clear message."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from core.broker_settings import Brokers
from core.durations import parse_duration
from core.errors import ConfigError
from core.mapping_settings import WebhookSettings
from core.pull_settings import PullSettings
from core.replay_settings import ReplaySettings
from core.report_settings import ReportSettings

ENV_PREFIX = "SYNCWATCH_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "syncwatch"


class IngestSettings(BaseModel):
    """Limits of ``POST /v1/events`` (api.md: at most 10,000 events and 10 MiB)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_events: int = Field(default=10_000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)


class ProbeSettings(BaseModel):
    """The probe runner: how often ``serve`` runs a cycle, and how many new events one cycle takes
    (a cycle that hits the limit is followed at once by another)."""

    model_config = ConfigDict(extra="forbid")

    interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    batch_events: int = Field(default=5000, ge=1, le=100_000)
    enabled: bool = True


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def headers_from_env(name: str) -> dict[str, str]:
    """Headers from the environment variable ``name``: ``key=value`` pairs separated by commas,
    values percent-decoded (the format of ``OTEL_EXPORTER_OTLP_HEADERS``). Errors never quote the
    value: it holds secrets."""
    text = os.environ.get(name)
    if text is None:
        raise ValueError(f"the environment variable {name} is not set")
    headers = {}
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _HEADER_NAME.match(key):
            raise ValueError(
                f"the environment variable {name} must hold key=value pairs separated by commas "
                f"(entry {number} is not one)"
            )
        headers[key] = unquote(value.strip())
    return headers


class TracingSettings(BaseModel):
    """OpenTelemetry traces of business flows, exported over OTLP/HTTP (docs/tracing.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: The OTLP/HTTP traces URL (``http://collector:4318/v1/traces``). None: the exporter's
    #: standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` variables.
    endpoint: str | None = None
    #: The NAME of an environment variable holding extra headers ``k=v,k2=v2`` (tokens, tenants):
    #: secrets never go into the YAML file.
    headers_env: str | None = None
    service_name: str = Field(default="syncwatch", min_length=1, max_length=255)
    #: Seconds between two exports of the flows whose trace changed.
    export_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: Flows one export request takes (a full batch is followed at once by another).
    batch_flows: int = Field(default=200, ge=1, le=10_000)
    #: Seconds one export request may take, retries included.
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: Trace the service's own HTTP requests too (one SERVER span per request).
    requests: bool = True

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                "must be an http:// or https:// URL such as http://host:4318/v1/traces"
            )
        return value

    @field_validator("headers_env")
    @classmethod
    def _names_a_variable(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not _ENV_NAME.match(value):
            raise ValueError(
                "must be the name of an environment variable that holds the headers, "
                "not the headers themselves"
            )
        if info.data.get("enabled"):
            headers_from_env(value)  # fail at start-up, not at the first export
        return value

    def headers(self) -> dict[str, str]:
        return {} if self.headers_env is None else headers_from_env(self.headers_env)


class SourceSettings(BaseModel):
    """One source system (an event ``source``): when it counts as silent."""

    model_config = ConfigDict(extra="forbid")

    #: no event (by event time) for longer than this makes the source silent (kpis.md data
    #: quality, and the silent-source alert); None: never silent
    silent_after: timedelta | None = None

    @field_validator("silent_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)


class MetricsSettings(BaseModel):
    """``GET /metrics`` (metrics.md): open by default; exemplars in OpenMetrics."""

    model_config = ConfigDict(extra="forbid")

    require_key: bool = False  # when true, a key with the viewer role (or admin) is required
    exemplars: bool = True


class SloSettings(BaseModel):
    """The propagation SLO per flow type, exposed as gauges for the shipped alert rules
    (docs/alerts.md): the share of decided flows that must meet their deadline over 30 days, and
    the minimum-volume guard of the burn-rate alerts."""

    model_config = ConfigDict(extra="forbid")

    #: flow type -> objective, strictly between 0 and 1; other flow types get the default
    objectives: dict[str, float] = Field(default_factory=dict)
    default_objective: float = Field(default=0.95, gt=0, lt=1)
    #: no burn-rate alert while fewer flows of the type were decided in the long window
    min_decided_flows: int = Field(default=10, ge=0)

    @field_validator("objectives")
    @classmethod
    def _between_0_and_1(cls, value: dict[str, float]) -> dict[str, float]:
        for flow_type, objective in value.items():
            if not 0 < objective < 1:
                raise ValueError(
                    f"the objective of {flow_type} must be between 0 and 1 (exclusive), "
                    f"such as 0.95; got {objective}"
                )
        return value


#: The shortest ``retention.closed_flows``.
MIN_CLOSED_FLOWS = timedelta(days=90)


class RetentionSettings(BaseModel):
    """What the scheduler deletes once a day, at ``hour``:``minute`` UTC (core/retention.py,
    docs/deployment.md). Durations such as ``400d``; None keeps for ever."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    hour: int = Field(default=3, ge=0, le=23)
    minute: int = Field(default=17, ge=0, le=59)
    #: correlation IDs whose every flow ended longer ago than this go whole, events included;
    #: None (the default) keeps every flow and event
    closed_flows: timedelta | None = None
    #: dead letters re-ingested successfully, this long after the retry (pending ones stay)
    retried_dead_letters: timedelta | None = timedelta(days=30)
    #: Alertmanager deliveries of alerts resolved and handled, this long after they arrived
    alert_deliveries: timedelta | None = timedelta(days=90)
    #: finished runs of the claimed jobs (weekly report, pull, retention)
    job_runs: timedelta | None = timedelta(days=90)
    #: correlation IDs deleted per transaction
    batch_correlations: int = Field(default=500, ge=1, le=10_000)

    @field_validator(
        "closed_flows", "retried_dead_letters", "alert_deliveries", "job_runs", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("closed_flows")
    @classmethod
    def _not_into_kpi_windows(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < MIN_CLOSED_FLOWS:
            raise ValueError(
                f"must be at least {MIN_CLOSED_FLOWS.days}d: a shorter horizon would delete flows "
                "that the 30-day KPI windows, the burn-rate alerts and the weekly report's 8-week "
                "trend still count"
            )
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"
    #: How long a verified API key is trusted without asking the database again (seconds).
    #: A revoked key stops working within this time.
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    #: flow types (flows.md); None means the three defaults. Checked by probes.flowtypes at start.
    flows: dict[str, Any] | None = None
    #: source systems by their event ``source``, with their silence thresholds
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    slo: SloSettings = Field(default_factory=SloSettings)
    #: replay targets per middleware source, guardrail limits, retries, follow-up, auto-replays
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    #: the weekly KPI report: schedule and time zone, formats, keeping, e-mail and chat delivery
    reports: ReportSettings = Field(default_factory=ReportSettings)
    #: POST /v1/webhooks/{preset}: your preset directories, signing secrets (docs/webhooks.md)
    #: directories of your own mapping presets (<name>.yaml), searched before the built-in ones
    #: by the webhooks, the pull connectors and the broker consumers (docs/mapping.md)
    preset_dirs: list[Path] = Field(default_factory=list)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    #: pull connectors and reconciliations of source systems that cannot push (docs/pull.md)
    pull: PullSettings = Field(default_factory=PullSettings)
    #: message-broker consumers run by ``syncwatch consume`` (docs/brokers.md), by name
    brokers: Brokers = Field(default_factory=dict)
    #: what the scheduler deletes once a day (docs/deployment.md, Retention)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @field_validator("preset_dirs")
    @classmethod
    def _directories(cls, value: list[Path]) -> list[Path]:
        for directory in value:
            if not directory.is_dir():
                raise ValueError(f"{directory} is not a directory")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0]
        if scheme == "postgresql" or scheme.startswith("postgres"):
            if scheme != "postgresql+psycopg":
                raise ValueError(
                    "PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://"
                )
        elif not scheme.startswith("sqlite"):
            raise ValueError("must be a sqlite:// or postgresql+psycopg:// URL")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL; by default a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'syncwatch.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """The YAML file named by ``SYNCWATCH_CONFIG``; environment variables take precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the work

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if not path:
            return {}
        return load_yaml(Path(path))


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SYNCWATCH_CONFIG: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"SYNCWATCH_CONFIG: {path} is not UTF-8 text: {exc.reason}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"SYNCWATCH_CONFIG: {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"SYNCWATCH_CONFIG: {path} must hold a mapping at the top level")
    if "config" in loaded:
        raise ConfigError(f"config: not allowed inside the configuration file {path}")
    return loaded


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the settings; raise :class:`ConfigError` naming the offending key."""
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            env_name = ENV_PREFIX + "__".join(str(p) for p in error["loc"]).upper()
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown setting"
            problems.append(f"{key} ({env_name}): {message}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from exc
