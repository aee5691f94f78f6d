"""Signed webhook delivery to county and unit systems."""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from services.notify.http11 import Http11Client, HttpClientError

SIGNATURE_HEADER = "X-Petitions-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, body: bytes) -> str:
    """HMAC-SHA256 of the exact body bytes, as `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# json.dumps with options builds an encoder per call; this one is made once (same output).
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def body_text(payload: dict[str, Any]) -> str:
    """The body as text: `encode_body` is exactly its UTF-8 bytes (to scan without decoding)."""
    return _BODY_ENCODER.encode(payload)


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent (deterministic, so a resend is identical)."""
    return body_text(payload).encode()


class DeliveryFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebhookSender:
    def __init__(self, client: httpx.AsyncClient | Http11Client, secret: str) -> None:
        self.client = client
        self.secret = secret

    async def send(self, url: str, notice_id: str, payload: dict[str, Any],
                   body: bytes | None = None) -> int:
        """POST once; the receiver de-duplicates on the idempotency key if we retry. `body`,
        when given, is `encode_body(payload)` already made by the caller."""
        body = body if body is not None else encode_body(payload)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body),
            IDEMPOTENCY_HEADER: notice_id,
        }
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, HttpClientError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise DeliveryFailed(f"HTTP {response.status_code} from {url}",
                                 response.status_code)
        return response.status_code
