"""Notify's settings: the shared ones, plus documents, channels and delivery tuning."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field

from petitions.infra.settings import REPO_ROOT, NotifySettings


class NotifyServiceSettings(NotifySettings):
    routes_file: Path = Field(REPO_ROOT / "config" / "notify-routes.json",
                              alias="NOTIFY_ROUTES_FILE")
    contacts_file: Path = Field(REPO_ROOT / "config" / "notify-contacts.json",
                                alias="NOTIFY_CONTACTS_FILE")
    # A province's own templates: <dir>/<division code>/<kind>.html, falling back to
    # <dir>/default/ and then to the built-in set.
    templates_dir: Path | None = Field(None, alias="NOTIFY_TEMPLATES_DIR")
    smtp_host: str = Field("", alias="NOTIFY_SMTP_HOST")
    smtp_port: int = Field(25, alias="NOTIFY_SMTP_PORT")
    smtp_from: str = Field("notify@petitions.invalid", alias="NOTIFY_SMTP_FROM")
    smtp_username: str = Field("", alias="NOTIFY_SMTP_USERNAME")
    smtp_password: str = Field("", alias="NOTIFY_SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, alias="NOTIFY_SMTP_STARTTLS")
    sms_gateway_url: str = Field("", alias="NOTIFY_SMS_GATEWAY_URL")
    sms_gateway_token: str = Field("", alias="NOTIFY_SMS_GATEWAY_TOKEN")
    # A send not settled within the lease is taken to have died with its sender and is
    # resent (same idempotency key) by any replica; keep it above the channel timeouts.
    lease_s: float = Field(30.0, alias="NOTIFY_LEASE_S")
    retry_base_s: float = Field(2.0, alias="NOTIFY_RETRY_BASE_S")
    retry_cap_s: float = Field(600.0, alias="NOTIFY_RETRY_CAP_S")
    poll_s: float = Field(0.5, alias="NOTIFY_POLL_S")
    send_concurrency: int = Field(128, alias="NOTIFY_SEND_CONCURRENCY")
    # After a short fetch of events on a busy stream, how long to wait for more to plan in
    # the same batch (on a quiet one, none). Off by default: notify is the end of the chain,
    # and under a heavy stream over several replicas its fetches are short but frequent, so
    # a linger would add its length to nearly every delivery for a few percent less CPU. At
    # 200 petitions/s (three runs each way, alternated), 0.02 here took 3% off the pipeline's
    # CPU (6.80 against 7.02 ms a petition) and added 28 ms to the median notice (58 against
    # 30 ms; p99 72-125 ms either way).
    consumer_linger_s: float = Field(0.0, alias="NOTIFY_CONSUMER_LINGER_S", ge=0, le=5)
    # How long the recorder waits for more outcomes before appending a batch of them.
    record_linger_s: float = Field(0.02, alias="NOTIFY_RECORD_LINGER_S")
    instance_id: str = Field(f"{socket.gethostname()}:{os.getpid()}", alias="NOTIFY_INSTANCE_ID")
