"""The channels: signed webhooks, e-mail over SMTP, SMS through an HTTP gateway.

Every send carries the delivery's idempotency key (event, recipient, channel): the webhook
`Idempotency-Key` header, the SMS gateway's `Idempotency-Key` header and `reference`, and the
e-mail's `Message-ID` and `X-Idempotency-Key`; a resend after a crash uses the same key, so a
receiver that de-duplicates on it processes the notice once. (SMTP relays do not de-duplicate:
e-mail is at least once on the wire, with a stable Message-ID for the mail client.)
"""
from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx

from services.notify.webhook import DeliveryFailed, WebhookSender


class PermanentFailure(DeliveryFailed):
    """Retrying cannot help (no address, the receiver refuses the request as such)."""


@dataclass(frozen=True)
class SendResult:
    outcome: str  # "delivered" (the receiving system confirmed) or "sent" (a relay accepted)
    provider_ref: str = ""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime: str = "application/pdf"


# 4xx answers that mean "this request will never succeed"; other 4xx (408, 425, 429) are retried
PERMANENT_HTTP = {400, 401, 403, 404, 405, 410, 413, 415, 422}


class WebhookChannel:
    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender

    async def send(self, url: str, key: str, payload: dict[str, Any],
                   body: bytes | None = None) -> SendResult:
        try:
            status = await self.sender.send(url, key, payload, body=body)
        except DeliveryFailed as exc:
            code = getattr(exc, "status", None)
            if code in PERMANENT_HTTP:
                raise PermanentFailure(str(exc)) from exc
            raise
        return SendResult("delivered", f"HTTP {status}")


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "notify@petitions.invalid"
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout: float = 10.0


class EmailChannel:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    @staticmethod
    def message_id(key: str) -> str:
        return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@notify.petitions>"

    def build(self, to: str, key: str, subject: str, text: str, html: str,
              attachments: list[Attachment]) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = self.message_id(key)
        msg["X-Idempotency-Key"] = key
        msg.set_content(text or subject)
        msg.add_alternative(html, subtype="html")
        for a in attachments:
            maintype, subtype = a.mime.split("/", 1)
            msg.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
        return msg

    async def send(self, to: str, key: str, subject: str, text: str, html: str,
                   attachments: list[Attachment]) -> SendResult:
        if not self.config.host:
            raise PermanentFailure("no SMTP server configured (NOTIFY_SMTP_HOST)")
        msg = self.build(to, key, subject, text, html, attachments)
        try:
            refused = await asyncio.to_thread(self._send, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure(f"SMTP refused the recipient ({_smtp_code(exc)})") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP: {type(exc).__name__}: {exc}"[:300]) from exc
        if refused:
            raise PermanentFailure("SMTP refused the recipient")
        return SendResult("sent", msg["Message-ID"])

    def _send(self, msg: EmailMessage) -> dict[str, Any]:
        c = self.config
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
            if c.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if c.username:
                smtp.login(c.username, c.password)
            return smtp.send_message(msg)


def _smtp_code(exc: smtplib.SMTPRecipientsRefused) -> str:
    codes = {str(v[0]) for v in exc.recipients.values() if isinstance(v, tuple)}
    return ", ".join(sorted(codes)) or "refused"


class SmsChannel:
    """An SMS gateway adapter: POST {to, text, reference} as JSON to `<gateway>`; the gateway
    answers 2xx with {"message_id": ...}. Delivery receipts are the gateway's business: an
    accepted message is recorded as sent."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str = "",
                 sender_name: str = "") -> None:
        self.client = client
        self.url = url
        self.token = token
        self.sender_name = sender_name

    async def send(self, to: str, key: str, text: str) -> SendResult:
        if not self.url:
            raise PermanentFailure("no SMS gateway configured (NOTIFY_SMS_GATEWAY_URL)")
        headers = {"Idempotency-Key": key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"to": to, "text": text, "reference": key}
        if self.sender_name:
            body["sender"] = self.sender_name
        try:
            r = await self.client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"SMS gateway: {type(exc).__name__}") from exc
        if r.status_code in PERMANENT_HTTP:
            raise PermanentFailure(f"SMS gateway refused: HTTP {r.status_code}")
        if r.status_code >= 300:
            raise DeliveryFailed(f"SMS gateway: HTTP {r.status_code}")
        try:
            ref = str(r.json().get("message_id", ""))
        except ValueError:
            ref = ""
        return SendResult("sent", ref)
