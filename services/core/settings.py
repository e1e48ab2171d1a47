"""One settings object for every citysense process, read from ``CITYSENSE_*`` environment variables.

Built once at start-up and passed down; a bad value is refused here, before anything connects.
The README's settings table is generated from this class (``citysense settings``), so the two cannot drift.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The broker account with which the API manages device accounts (services/broker/dynsec.py).
ADMIN_USERNAME = "citysense-admin"
#: Tokens that must never protect a deployed API.
WEAK_TOKENS = {"", "changeme", "change-me", "admin", "token", "secret", "password"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYSENSE_", extra="ignore")

    # --- connections -------------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql://citysense@127.0.0.1:5433/citysense"),
        description="PostgreSQL (TimescaleDB) connection URL; its password is never logged.",
    )
    api_read_database_url: SecretStr | None = Field(
        None,
        description="Where the API sends its reads (GET requests), e.g. a standby: a libpq multi-host URL with "
                    "`target_session_attrs=prefer-standby`. Unset: the database URL. Writes always go to the database URL.",
    )
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="MQTT broker: `mqtts://host:port` (TLS, verified) or `mqtt://host:port` (plain, for a broker on this host). "
                    "Several, comma-separated: the ingestor moves to the next when one fails (each keeps its own session).",
    )
    mqtt_ca_file: Path | None = Field(
        None, description="CA certificate(s) that signed the broker's certificate (unset: the system's trusted CAs)."
    )
    mqtt_cert_file: Path | None = Field(None, description="Client certificate, for a broker that requires one.")
    mqtt_key_file: Path | None = Field(None, description="Private key of the client certificate.")
    mqtt_username: str | None = Field(
        None, description="The ingestor's MQTT account (default: its client id, as the broker binds ingestor accounts)."
    )
    mqtt_password: SecretStr | None = Field(None, description="The ingestor's MQTT password.")
    mqtt_admin_username: str = Field(
        ADMIN_USERNAME, description="The broker account with which the API issues and revokes device credentials."
    )
    mqtt_admin_password: SecretStr = Field(
        SecretStr(""),
        description="Its password (unset: the API cannot issue device credentials, and device registration answers 503).",
    )

    # --- API -----------------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    admin_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token for admin routes (device registration). `citysense up` generates one when unset.",
    )
    environment: str = Field(
        "production",
        description="`development` allows a weak admin token while the API listens on loopback only (`citysense up` sets "
                    "it); anything else refuses one.",
    )
    api_max_page_size: int = Field(1000, ge=1, le=100_000, description="Largest `limit` a list accepts.")
    api_default_page_size: int = Field(100, ge=1, description="`limit` when a list request gives none.")
    api_max_range_days: int = Field(
        31, ge=1, le=3660, description="Widest time range (days) one raw-readings request may cover."
    )
    api_max_aggregate_days: int = Field(
        400, ge=1, le=3660, description="Widest range (days) of an aggregate with buckets of whole hours (from rollups)."
    )
    api_max_export_days: int = Field(
        366, ge=1, le=3660, description="Widest time range (days) of one dataset download (streamed, so memory stays flat)."
    )
    api_cache_s: float = Field(
        30.0, ge=0, le=3600,
        description="Seconds a quality-of-life answer about the present is reused (0: never); answers about a past `at` are reused for an hour.",
    )
    timezone: str = Field("America/New_York", description="The city's time zone: local days for noise (Lden) and daily summaries.")
    public_url: str | None = Field(
        None,
        description="Base URL of the API as the public sees it, for links in data.json. Unset: each link follows the "
                    "address the request reached (with the scheme and client address a trusted proxy forwards).",
    )
    api_forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Reverse proxies trusted to set X-Forwarded-Proto/-For (comma-separated addresses or networks; "
                    "`*` trusts any, only behind a proxy that overwrites them).",
    )
    dashboard_tiles_url: str | None = Field(
        None,
        description="A background tile layer for the dashboard's map (`https://…/{z}/{x}/{y}.png`); unset: the CSA "
                    "boundaries alone, which need no tile server and no internet.",
    )
    dashboard_tiles_attribution: str = Field("", max_length=300, description="The tile layer's attribution.")
    api_summary_refresh_s: float = Field(
        30.0, ge=0.5, le=3600,
        description="Seconds between two background computations of the city-wide summary (/v1/qol/summary), which "
                    "requests are served from; each answer states when it was computed.")
    dashboard_refresh_s: int = Field(60, ge=1, le=3600, description="Seconds between two refreshes of the dashboard.")
    publisher: str = Field("Baltimore City Office of Information & Technology", description="Publisher named in data.json.")
    contact_name: str = Field("Baltimore City Open Data", description="Contact point named in data.json.")
    contact_email: str = Field("opendata@baltimorecity.gov", description="Contact e-mail in data.json.")
    api_workers: int = Field(1, ge=1, le=64, description="API worker processes (each with its own pool and cache).")
    api_pool_size: int = Field(8, ge=1, le=200, description="Database connections in the API's pool.")
    api_max_body_bytes: int = Field(
        65536, ge=1024, le=1 << 26, description="Largest request body; a larger one is refused with 413 as it arrives."
    )
    api_statement_timeout_ms: int = Field(
        10_000, ge=100, le=3_600_000,
        description="Time limit of each API query (downloads excepted); beyond it the request answers 503.",
    )
    api_max_aggregate_cells: int = Field(
        50_000, ge=10, le=10_000_000,
        description="Most buckets × groups one aggregate request may ask for (422 beyond, with how to narrow it).",
    )
    api_export_concurrency: int = Field(
        2, ge=1, le=64, description="Downloads served at once by a worker (its own pool); more answer 503 with Retry-After."
    )
    api_export_statement_timeout_s: int = Field(
        600, ge=1, le=86_400, description="Longest a dataset download may run before the database ends it."
    )
    api_export_idle_s: int = Field(
        60, ge=1, le=3600,
        description="A download whose client reads nothing for this long is ended (idle_in_transaction_session_timeout), "
                    "so a stalled client holds no snapshot or lock.",
    )
    api_metrics_host: str = Field("127.0.0.1", description="Address of the API's separate metrics endpoint.")
    api_metrics_port: int = Field(
        0, ge=0, le=65535,
        description="When set, /metrics is served on this port only (worker i of CITYSENSE_API_WORKERS on port + i), "
                    "not on the API's address.",
    )

    # --- ingestor ------------------------------------------------------------------------------
    ingest_client_id: str | None = Field(
        None,
        description="MQTT client id of this ingestor: its persistent session outlives restarts, so it must be stable and "
                    "unique. Default: `citysense-ingest-<host name>-<CITYSENSE_INGEST_INSTANCE>`.",
    )
    ingest_instance: str = Field(
        "1", pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="Distinguishes ingestors on one host in the default client id.",
    )
    ingest_share_group: str | None = Field(
        None, description="When set, subscribe through `$share/<group>/…` so several ingestors split the load."
    )
    ingest_session_expiry_s: int = Field(
        7 * 24 * 3600, ge=0, description="MQTT 5 session expiry: how long the broker keeps the ingestor's queue."
    )
    ingest_inflight: int = Field(
        1000, ge=1, le=65535,
        description="MQTT 5 receive maximum: unacknowledged messages the broker may send the ingestor.",
    )
    ingest_batch_size: int = Field(500, ge=1, le=65535, description="Flush a batch at this many messages…")
    ingest_batch_age_ms: int = Field(100, ge=1, le=60_000, description="…or when its oldest message is this old.")
    ingest_max_payload_bytes: int = Field(
        65536, ge=64, le=1 << 24, description="Larger payloads are rejected as `too_large` (and cut at receipt)."
    )
    ingest_rejected_payload_bytes: int = Field(
        4096, ge=0, le=1 << 24,
        description="A rejected message's payload is stored cut to this many bytes, with its length and SHA-256.",
    )
    ingest_inbox_max_bytes: int = Field(
        64 << 20, ge=1 << 16,
        description="Payload bytes held between the broker and the pipeline; QoS 0 messages beyond it are dropped and counted.",
    )
    ingest_batch_max_readings: int = Field(
        100_000, ge=1, description="A batch holding more readings than this is written in halves, one transaction each."
    )
    ingest_batch_max_bytes: int = Field(
        4 << 20, ge=1 << 10, description="A batch also ends at this many payload bytes (which bounds its readings too)."
    )
    ingest_max_readings_per_message: int = Field(
        2000, ge=1, description="A message carrying more readings is rejected as `too_many_readings`."
    )
    ingest_max_past_s: int = Field(
        30 * 24 * 3600, ge=0, description="Readings older than this (seconds) are rejected as `time_too_old`."
    )
    ingest_max_future_s: int = Field(
        300, ge=0, description="Readings further ahead (seconds) are rejected as `time_in_future`."
    )
    ingest_metrics_host: str = Field("127.0.0.1", description="Address of the ingestor's metrics endpoint.")
    ingest_metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus metrics port of the ingestor (0: off).")
    ingest_retry_max_s: float = Field(30.0, gt=0, description="Cap of the back-off between database retries.")
    rollup_interval_s: float = Field(
        60.0, gt=0, le=3600, description="Seconds between two refreshes of the daily and hourly rollups by CSA (by the ingestor)."
    )
    retention_rejected_days: int = Field(
        30, ge=1, le=3660, description="Rejected messages last received longer ago than this are deleted."
    )
    retention_raw_days: int = Field(
        365, ge=1, description="Raw readings older than this are dropped (whole chunks at a time; the rollups stay)."
    )

    # --- local stack (`citysense up`) ----------------------------------------------------------
    home: Path = Field(Path(".citysense"), description="Where `citysense up` keeps its database, broker data and secrets.")
    pg_port: int = Field(5433, ge=1, le=65535, description="Port of the local PostgreSQL cluster started by `up`.")
    pg_bin: Path | None = Field(None, description="PostgreSQL server binaries (default: the newest installed).")
    mqtt_port: int = Field(
        1883, ge=0, le=65535, description="Plain MQTT port of the broker started by `up`, on 127.0.0.1 (0: TLS only)."
    )
    mqtt_tls_port: int = Field(8883, ge=1, le=65535, description="MQTT over TLS port of the broker started by `up`.")

    # --- simulator -----------------------------------------------------------------------------
    sim_devices: int = Field(120, ge=1, le=100_000, description="Devices in the simulated fleet.")
    sim_interval_s: float = Field(10.0, gt=0, description="Seconds between two readings of one simulated device.")
    sim_seed: int = Field(1, description="Seed of the simulated fleet and its signals.")
    sim_api_url: str = Field(
        "http://127.0.0.1:8000", description="The API the simulator registers its devices through (with the admin token)."
    )
    sim_credentials_file: Path | None = Field(
        None, description="Where the simulator keeps its devices' MQTT passwords (default: `<CITYSENSE_HOME>/sim-credentials.json`)."
    )
    sim_fleet_file: Path | None = Field(
        None, description="A fleet definition (JSON, see `citysense simulate --write-fleet`) to run instead of the one shipped with citysense."
    )

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str) -> str:
        for url in v.split(","):
            parts = urlsplit(url.strip())
            if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
                raise ValueError("must look like mqtts://host:port or mqtt://host:port (or several, comma-separated)")
            try:
                parts.port
            except ValueError as exc:
                raise ValueError(f"bad port in {url!r}") from exc
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr) -> SecretStr:
        if urlsplit(v.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return v

    @property
    def mqtt_account(self) -> tuple[str | None, str | None]:
        """The ingestor's (user name, password); no account when no password is set."""
        if self.mqtt_password is None:
            return (self.mqtt_username, None) if self.mqtt_username else (None, None)
        return self.mqtt_username or self.client_id, self.mqtt_password.get_secret_value()

    @property
    def client_id(self) -> str:
        """The ingestor's MQTT client id (CITYSENSE_INGEST_CLIENT_ID, or one unique per host and instance)."""
        return self.ingest_client_id or f"citysense-ingest-{socket.gethostname()}-{self.ingest_instance}"

    @property
    def dsn(self) -> str:
        return self.database_url.get_secret_value()

    def admin_token_problem(self) -> str | None:
        """Why the admin token may not be used, or None when it may."""
        token = self.admin_token.get_secret_value()
        if self.environment == "development" and self.api_host in ("127.0.0.1", "::1", "localhost"):
            return None if token else "CITYSENSE_ADMIN_TOKEN is empty"
        if token.lower() in WEAK_TOKENS or len(token) < 16:
            return "CITYSENSE_ADMIN_TOKEN is empty, a default, or shorter than 16 characters"
        return None


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
