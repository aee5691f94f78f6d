"""Petitioner identity: hidden from roles that do not need it, and every read recorded."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.access import Principal

REDACTED = "[redacted]"


def redact_identity(entry: dict[str, Any]) -> dict[str, Any]:
    """A history entry without the identity of the people who petitioned: the petitioner, a
    joint petition's designated contact and a collective visit's representatives (how many
    there were stays visible)."""
    data = entry.get("data") or {}
    hidden: dict[str, Any] = {}
    if data.get("petitioner") is not None:
        hidden["petitioner"] = REDACTED
    if data.get("contact") is not None:
        hidden["contact"] = REDACTED
    if data.get("representatives"):
        hidden["representatives"] = [REDACTED] * len(data["representatives"])
    return {**entry, "data": {**data, **hidden}} if hidden else entry


class IdentityReads:
    """Append-only record of who read which case's petitioner identity, when and why."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, case_id: UUID, principal: Principal, purpose: str) -> None:
        await self.pool.execute(
            "INSERT INTO identity_reads (case_id, subject, role, jurisdiction, purpose) "
            "VALUES ($1, $2, $3, $4, $5)",
            case_id, principal.subject, principal.role.value, principal.jurisdiction, purpose,
        )

    async def for_case(self, case_id: UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT subject, role, jurisdiction, purpose, read_at FROM identity_reads "
            "WHERE case_id = $1 ORDER BY id", case_id)
        return [dict(r) | {"read_at": r["read_at"].isoformat()} for r in rows]
