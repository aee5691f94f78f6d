"""Typed settings from the environment, one class per service.

Secrets have development defaults only: outside `PETITIONS_ENV=development` a missing or
default secret refuses to start the service.
"""
from __future__ import annotations

import base64
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_WEBHOOK_SECRET = "dev-webhook-secret-not-for-production"
DEV_AUTH_SIGNING_KEY = "dev-auth-signing-key-not-for-production-0123456789"
# base64 of 32 bytes (AES-256); development only.
DEV_PAYLOAD_KEY = "ZGV2LXBheWxvYWQta2V5LW5vdC1mb3ItcHJvZHVjdCE="
DEV_IDENTITY_HASH_KEY = "dev-identity-hash-key-not-for-production-0123456789"
REPO_ROOT = Path(__file__).resolve().parents[2]


class CommonAuthSettings(BaseSettings):
    """The secrets every service needs; development defaults are refused elsewhere."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    env: str = Field("development", alias="PETITIONS_ENV")
    auth_signing_key: str = Field(DEV_AUTH_SIGNING_KEY, alias="AUTH_SIGNING_KEY", min_length=32)
    payload_encryption_key: str = Field(DEV_PAYLOAD_KEY, alias="PAYLOAD_ENCRYPTION_KEY")
    # Keys the hash that matches a petitioner across petitions without the ID number in clear.
    identity_hash_key: str = Field(DEV_IDENTITY_HASH_KEY, alias="IDENTITY_HASH_KEY", min_length=32)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @model_validator(mode="after")
    def _secrets_are_real_outside_development(self) -> CommonAuthSettings:
        if len(base64.b64decode(self.payload_encryption_key, validate=True)) not in (16, 24, 32):
            raise ValueError("PAYLOAD_ENCRYPTION_KEY must be base64 of 16, 24 or 32 bytes")
        if not self.is_development:
            if self.auth_signing_key == DEV_AUTH_SIGNING_KEY:
                raise ValueError("AUTH_SIGNING_KEY must be set outside development")
            if self.payload_encryption_key == DEV_PAYLOAD_KEY:
                raise ValueError("PAYLOAD_ENCRYPTION_KEY must be set outside development")
            if self.identity_hash_key == DEV_IDENTITY_HASH_KEY:
                raise ValueError("IDENTITY_HASH_KEY must be set outside development")
        return self


class CommonSettings(CommonAuthSettings):
    postgres_dsn: str = Field(..., alias="POSTGRES_DSN")
    nats_url: str = Field("nats://127.0.0.1:4222", alias="NATS_URL")
    # Stream and subject prefix are settings so that several deployments (or test runs) can
    # share one NATS server without seeing each other's messages.
    nats_stream: str = Field("PETITIONS", alias="NATS_STREAM")
    subject_prefix: str = Field("petitions", alias="NATS_SUBJECT_PREFIX")
    nats_stream_replicas: int = Field(1, alias="NATS_STREAM_REPLICAS", ge=1, le=5)
    db_schema: str = Field("public", alias="POSTGRES_SCHEMA")
    # asyncpg connections per process (reads, relay, projection, listeners hold some).
    db_pool_size: int = Field(10, alias="DB_POOL_SIZE", ge=4, le=100)
    http_host: str = Field("127.0.0.1", alias="HTTP_HOST")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    relay_enabled: bool = Field(True, alias="RELAY_ENABLED")
    # How often consumer lag (JetStream num_pending) is read into /metrics.
    metrics_interval_s: float = Field(5.0, alias="METRICS_INTERVAL_SECONDS", gt=0)
    # After SIGTERM: readiness is false at once; for this long new requests get 503 with
    # Retry-After (in-flight ones finish), then the listener closes. Intake's default is 1 s.
    shutdown_drain_s: float = Field(0.0, alias="SHUTDOWN_DRAIN_SECONDS", ge=0, le=60)


class IntakeSettings(CommonSettings):
    http_port: int = Field(8001, alias="INTAKE_HTTP_PORT")
    grpc_port: int = Field(50051, alias="INTAKE_GRPC_PORT")
    max_body_bytes: int = Field(1024 * 1024, alias="INTAKE_MAX_BODY_BYTES")
    shutdown_drain_s: float = Field(1.0, alias="SHUTDOWN_DRAIN_SECONDS", ge=0, le=60)


class RoutingSettings(CommonSettings):
    http_port: int = Field(8002, alias="ROUTING_HTTP_PORT")
    directory_file: Path = Field(REPO_ROOT / "config" / "directory.json", alias="DIRECTORY_FILE")
    rules_file: Path = Field(REPO_ROOT / "config" / "routing-rules.json", alias="ROUTING_RULES_FILE")
    # How often a replica checks whether another one published a configuration change.
    config_poll_s: float = Field(2.0, alias="ROUTING_CONFIG_POLL_S", gt=0)
    # After a short fetch on a busy stream, how long to wait for more petitions to route in
    # the same batch (on a quiet one, none).
    consumer_linger_s: float = Field(0.02, alias="ROUTING_CONSUMER_LINGER_S", ge=0, le=5)


class DeadlinesSettings(CommonSettings):
    http_port: int = Field(8003, alias="DEADLINES_HTTP_PORT")


class NotifySettings(CommonSettings):
    http_port: int = Field(8004, alias="NOTIFY_HTTP_PORT")
    directory_file: Path = Field(REPO_ROOT / "config" / "directory.json", alias="DIRECTORY_FILE")
    # Unit webhooks not set in the directory go here (`{unit_id}` is substituted).
    default_webhook_url: str = Field("", alias="NOTIFY_DEFAULT_WEBHOOK_URL")
    webhook_secret: str = Field(DEV_WEBHOOK_SECRET, alias="NOTIFY_WEBHOOK_SECRET")
    webhook_timeout_s: float = Field(5.0, alias="NOTIFY_WEBHOOK_TIMEOUT_S")
    max_attempts: int = Field(8, alias="NOTIFY_MAX_ATTEMPTS")

    @model_validator(mode="after")
    def _no_default_secret_outside_development(self) -> NotifySettings:
        if not self.is_development and self.webhook_secret == DEV_WEBHOOK_SECRET:
            raise ValueError("NOTIFY_WEBHOOK_SECRET must be set outside development")
        return self
