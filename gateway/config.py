"""Configuration: pydantic-settings from ``XGW_*`` env vars plus one optional YAML file.

Precedence (highest first): environment, YAML file, embedded defaults. Unknown keys in either
source are start-up errors that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "XGW_"


class ConfigError(Exception):
    """A configuration problem, already phrased for an operator (one line, names the key)."""


class Settings(BaseSettings):
    """Every key the gateway understands. Env var = ``XGW_`` + upper-case key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    data_dir: Path = Field(Path("var"), description="SQLite files, generated sample keys")
    host: str = Field("127.0.0.1", description="address `xgw serve` listens on")
    port: int = Field(8080, ge=0, le=65535, description="port `xgw serve` listens on (0: any)")
    database_url: SecretStr | None = Field(
        None,
        description="where cases, the outbox and tokens live: sqlite:///path (default: "
        "gateway.sqlite3 in data_dir) or postgresql://user@host:port/db (several nodes)",
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="connections each node keeps to PostgreSQL"
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) of the listeners; with tls_key_file, they speak "
        "TLS 1.2 or newer only",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        None,
        description="mutual TLS for partners: the CA bundle their client certificates are "
        "checked against; each partner's certificate fingerprints are in partners.yaml",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks of front proxies (nginx) whose X-Forwarded-For "
        "names the client; from anyone else the header is ignored",
    )
    redis_url: SecretStr | None = Field(
        None, description="shared state for several instances (nonces, leases, rate limits)"
    )
    node_id: str = Field(
        "xiangzhou-gw-1", pattern=r"^[A-Za-z0-9._-]{1,64}$", description="this gateway node"
    )
    region_code: str = Field(
        "420607", pattern=r"^[0-9]{6}$", description="our jurisdiction (GB/T 2260), 襄州区"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a TTY, JSON lines otherwise"
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="largest request body accepted"
    )
    max_form_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="largest case filing (JSON form) a window may send (413 BODY_TOO_LARGE "
        "above): forms are structured data; scans and licences travel as materials",
    )
    body_read_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="time a request body may take to arrive in full (408 BODY_TIMEOUT after)",
    )
    max_material_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="largest material (scan, OFD) one filing may upload (413 MATERIAL_TOO_LARGE "
        "as soon as one passes it); a matter's own max_mib may be lower",
    )
    max_case_material_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="a filing's materials all told"
    )
    material_upload_seconds: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="time a filing with materials may take to arrive in full (408 BODY_TIMEOUT)",
    )
    material_retention_days: float = Field(
        30.0,
        ge=0,
        description="materials are deleted this long after their case is done or cancelled "
        "(the exchange log keeps their digests for ever)",
    )
    material_purge_seconds: float = Field(
        3600.0, gt=0, description="how often materials past their retention are deleted"
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="time in-flight work gets on SIGTERM"
    )
    crypto_backend: Literal["native", "gmssl"] = Field(
        "native", description="native: OpenSSL/cryptography (fast); gmssl: pure Python"
    )
    seal_key_pool_depth: int = Field(
        8,
        ge=0,
        le=1024,
        description="content keys wrapped ahead, per partner key, while the CPU is idle (0: off)",
    )
    inbound_refusals_per_minute: int = Field(
        60,
        ge=1,
        description="unauthenticated partner messages refused per source address and minute "
        "before that address is answered 429 until the minute ends",
    )
    replay_window_seconds: float = Field(
        300.0, gt=0, le=3600, description="accepted clock skew of an envelope's created time"
    )
    keys_dir: Path | None = Field(
        None, description="trust.yaml and key files; default <data_dir>/keys"
    )
    key_passphrase: SecretStr | None = Field(
        None, description="passphrase of our private keys (prefer key_passphrase_file)"
    )
    key_passphrase_file: Path | None = Field(
        None, description="file whose first line is the passphrase of our private keys"
    )

    mappings_dir: Path | None = Field(
        None, description="mapping data folder; default: the packaged SAMPLE data"
    )

    audit_checkpoint_entries: int = Field(
        1000, ge=1, description="sign the exchange log after this many entries…"
    )
    audit_checkpoint_seconds: float = Field(
        60.0, gt=0, description="…or after this many seconds, whichever comes first"
    )
    console_idle_minutes: int = Field(
        15, ge=1, le=720, description="a console session ends after this many idle minutes"
    )
    audit_witness: str | None = Field(
        None,
        pattern=r"^[0-9]{6}$",
        description="the partner (region) that witnesses a checkpoint whose batch holds no "
        "partner's exchange; none: such checkpoints go unwitnessed",
    )
    audit_live_days: int = Field(
        365, ge=1, description="entries older than this are archived out of the live store"
    )
    audit_archive_dir: Path | None = Field(
        None, description="archive files of the exchange log; default <data_dir>/audit-archive"
    )
    audit_hmac_key_file: Path | None = Field(
        None, description="key of the person lookup hash; default <keys_dir>/audit-hmac.key"
    )

    partners_file: Path | None = Field(
        None, description="partner registry; default <data_dir>/partners.yaml (SAMPLE, generated)"
    )
    simulator_port: int = Field(
        8090, ge=0, le=65535, description="port of the bundled partner simulator (sample setup)"
    )
    delivery_max_age_seconds: float = Field(
        86400.0, gt=0, description="a message not delivered by then goes to the dead letters"
    )
    delivery_max_attempts: int = Field(60, ge=1, description="…or after this many attempts")
    delivery_retry_initial_seconds: float = Field(
        0.5, gt=0, description="first retry delay; doubles with jitter per attempt"
    )
    delivery_retry_max_seconds: float = Field(60.0, gt=0, description="longest retry delay")
    result_query_after_seconds: float = Field(
        3600.0,
        gt=0,
        description="a result a partner accepted as pending and has not reported is asked for "
        "(query) after this long, then at doubling intervals up to a day",
    )
    result_overdue_seconds: float = Field(
        7 * 86400.0,
        gt=0,
        description="a result still not reported after this long puts its case among those "
        "needing attention, with an alert line",
    )
    delivery_lease_seconds: float = Field(
        30.0, gt=0, description="a claimed message is another worker's after this long"
    )
    node_heartbeat_seconds: float = Field(
        2.0, gt=0, description="how often each gateway process tells the store it is alive"
    )
    node_dead_after_seconds: float = Field(
        6.0,
        gt=0,
        description="a process silent this long is dead: the other nodes take over the "
        "messages it held at their next claim, without waiting out its leases",
    )
    instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="this process among several; default host-pid",
    )

    @property
    def database(self) -> Path:
        """The embedded store's file (used when ``database_url`` is not set)."""
        return self.data_dir / "gateway.sqlite3"

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.database}"

    @property
    def audit_database(self) -> Path:
        return self.data_dir / "audit.sqlite3"

    @property
    def effective_audit_archive_dir(self) -> Path:
        return self.audit_archive_dir or self.data_dir / "audit-archive"

    @property
    def effective_partners_file(self) -> Path:
        """The partner registry: ``partners_file``, or the sample one in the data folder."""
        return self.partners_file or self.data_dir / "partners.yaml"

    @property
    def effective_audit_hmac_key_file(self) -> Path:
        return self.audit_hmac_key_file or self.effective_keys_dir / "audit-hmac.key"

    @property
    def mappings_overlay_dir(self) -> Path:
        """Where imported catalogues go; they replace the base folder's for their region."""
        return self.data_dir / "mappings"

    @property
    def effective_keys_dir(self) -> Path:
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: Any) -> Any:
        """From the environment: addresses separated by commas."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or network") from None
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("tls_cert_file") is None):
            raise ValueError("set tls_cert_file and tls_key_file together, or neither")
        return value

    @field_validator("tls_client_ca_file")
    @classmethod
    def _client_ca_needs_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("tls_cert_file") is None:
            raise ValueError("mutual TLS needs TLS: set tls_cert_file and tls_key_file too")
        return value

    @field_validator("node_dead_after_seconds")
    @classmethod
    def _dead_after_beats(cls, value: float, info: ValidationInfo) -> float:
        beat = info.data.get("node_heartbeat_seconds")
        if beat is not None and value < 2 * beat:
            raise ValueError(
                f"must be at least twice node_heartbeat_seconds ({beat}): one late beat is "
                "not a dead node"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"sqlite", "postgresql", "postgres"}:
                raise ValueError("must be a sqlite:///path or postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in {"redis", "rediss", "unix"}:
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges env over YAML itself, so that it can name the source of a bad key.
        return (init_settings,)


def _yaml_values(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: must be a mapping of key: value")
    return {str(k): v for k, v in loaded.items()}


def _describe(key: str, from_env: bool) -> str:
    return f"{ENV_PREFIX}{key.upper()}" if from_env else key


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the effective settings or raise ConfigError naming the offending key."""
    env = os.environ if environ is None else environ
    fields = set(Settings.model_fields)
    for name in env:
        if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in fields:
            raise ConfigError(f"unknown configuration key {name.upper()} (environment)")
    file_values = _yaml_values(config_file) if config_file is not None else {}
    for key in file_values:
        if key not in fields:
            raise ConfigError(f"unknown configuration key '{key}' in {config_file}")
    env_values = {
        n[len(ENV_PREFIX) :].lower(): v for n, v in env.items() if n.upper().startswith(ENV_PREFIX)
    }
    try:
        return Settings.model_validate({**file_values, **env_values})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        source = _describe(key, key in env_values)
        if key not in env_values and config_file is not None:
            source = f"'{key}' in {config_file}"
        raise ConfigError(f"invalid configuration {source}: {first['msg']}") from None


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def effective_config(settings: Settings) -> dict[str, Any]:
    """The configuration as an operator may see it: every key, secrets masked."""
    shown: dict[str, Any] = {}
    for key in Settings.model_fields:
        value = getattr(settings, key)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            value = _mask_url(raw) if key.endswith("_url") else "***"
        elif isinstance(value, Path):
            value = str(value)
        shown[key] = value
    return shown
