"""Registering petitions: case numbers, idempotent retries, and the group-committed append."""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

from eventsourcing.persistence import IntegrityError

from petitions.domain.access import Permission, Principal, require
from petitions.domain.case import Case
from petitions.domain.intake_rules import check_registration
from petitions.domain.matching import petitioner_key
from petitions.domain.values import Actor, Category, Channel, Contact, Petitioner, local_date
from petitions.infra import tracing
from petitions.infra.logs import bind_case
from petitions.infra.store import (
    REQUEST_STORE_TIMEOUT_S,
    CaseStore,
    ConcurrencyConflict,
    in_thread,
)
from services.intake.matching import Match, Screening, screening_request
from services.intake.registration_batches import RegistrationBatches, Screened

IDEMPOTENCY_NAMESPACE = UUID("6f1c1d0e-7d1b-4a44-9d59-2d7e0b0c5a11")


class IdempotencyKeyReused(Exception):
    """The same Idempotency-Key was sent with a different petition."""


class OutsideJurisdiction(Exception):
    """The caller tried to register a petition for a division outside its jurisdiction."""


# What `json.dumps(body, sort_keys=True, ensure_ascii=False)` writes, the digests' form since
# the first release (stored digests are compared with new ones), by one encoder: `json.dumps`
# given any option builds a new encoder per call.
DIGEST_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class RegisterPetition:
    """Command: register one petition."""

    channel: Channel
    category: Category
    division: str
    subject: str
    content: str
    requests: list[str]
    people_count: int
    petitioner: Petitioner | None
    received_at: datetime
    accused_unit: str = ""
    representatives: tuple[Contact, ...] = ()
    contact: Contact | None = None

    def digest(self) -> str:
        """Fingerprint of what was submitted (to tell a retry from a different petition)."""
        body = {
            "channel": self.channel.value, "category": self.category.value,
            "division": self.division, "subject": self.subject, "content": self.content,
            "requests": self.requests, "people_count": self.people_count,
            "petitioner": self.petitioner.as_dict() if self.petitioner else None,
            "accused_unit": self.accused_unit,
            "representatives": [r.as_dict() for r in self.representatives],
            "contact": self.contact.as_dict() if self.contact else None,
        }
        raw = DIGEST_JSON.encode(body).encode()
        return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Registration:
    case: Case
    replayed: bool
    linked_as: str | None = None  # "repeat" or "duplicate" when joined to an open case


def case_number(county: str, year: int, seq: int) -> str:
    """Human-readable numbers, unique per county and year: 330106-2026-000042. The sequence
    is taken when a new petition is screened, before its case is saved, so a failed save
    leaves a gap; numbers are never reused."""
    return f"{county}-{year}-{seq:06d}"


class Registrar:
    def __init__(self, store: CaseStore, batches: RegistrationBatches,
                 identity_hash_key: bytes) -> None:
        self.store = store
        self.batches = batches
        self.identity_hash_key = identity_hash_key

    async def register(self, cmd: RegisterPetition, principal: Principal, at: datetime,
                       idempotency_key: str | None = None) -> Registration:
        require(principal, Permission.REGISTER)
        if not principal.can_see(cmd.division):
            raise OutsideJurisdiction(
                f"{principal.subject} registers for {principal.jurisdiction}, not {cmd.division}")
        # The rules on who comes hold for every petition, also one that joins an open case.
        check_registration(cmd.channel, cmd.people_count, list(cmd.representatives),
                           contact=cmd.contact, anonymous=cmd.petitioner is None)
        actor = principal.actor()
        digest = cmd.digest()
        case_id = _case_id_for(actor, idempotency_key)
        key = petitioner_key(cmd.petitioner.id_number, self.identity_hash_key) \
            if cmd.petitioner else ""
        request = screening_request(
            petitioner_key=key, division=cmd.division, category=cmd.category.value,
            subject=cmd.subject, content=cmd.content,
            number_for=(cmd.division, cmd.received_at.year),
            request_id=case_id if idempotency_key else None)

        def new_case(screening: Screening) -> Case:
            assert screening.seq is not None  # taken whenever nothing matched
            number = case_number(cmd.division, cmd.received_at.year, screening.seq)
            return _new_case(cmd, actor, at, case_id, digest, key, number,
                             screening.terminated_matter)

        bind_case(case_id)
        tracing.annotate_case(case_id)
        with tracing.span("screen and append", {tracing.CASE_ID_ATTRIBUTE: str(case_id)}):
            # A timeout block, not wait_for: no task of its own per registration.
            async with asyncio.timeout(REQUEST_STORE_TIMEOUT_S):
                screened = await self.batches.register(request, new_case)
        if screened.case is not None or screened.error is not None:
            return await self._new_or_retried(screened, case_id, digest)
        screening = screened.screening
        if screening.stored or screening.link is not None:
            return await self._replay(case_id, digest, screening)
        assert screening.match is not None  # not new, not a retry: it joins an open case
        return await self._join(screening.match, cmd, actor, at, case_id, digest)

    async def _new_or_retried(self, screened: Screened, case_id: UUID,
                              digest: str) -> Registration:
        """A new case: saved, refused by the domain, or raced by a retry of its request."""
        if screened.error is None:
            return Registration(screened.case, replayed=False)
        if not isinstance(screened.error, IntegrityError):
            raise screened.error
        # A concurrent retry with the same key won the race: answer with its case.
        earlier = await in_thread(self.store.get, case_id)
        if earlier is None:
            raise screened.error
        return _replay(earlier, digest)

    async def _join(self, match: Match, cmd: RegisterPetition, actor: Actor,
                    at: datetime, request_id: UUID, digest: str) -> Registration:
        """Link a repeat, or merge a duplicate, into the open case instead of a new one."""
        def join(case: Case) -> None:
            if match.kind == "repeat":
                case.link_repeat(channel=cmd.channel, received_at=cmd.received_at,
                                 people_count=cmd.people_count, actor=actor, at=at)
            else:
                case.merge_duplicate(channel=cmd.channel, received_at=cmd.received_at,
                                     source=actor.jurisdiction, actor=actor, at=at)

        case = await in_thread(self.store.update, match.case_id, join)
        await self.batches.finder.remember_link(request_id, match.case_id, match.kind, digest)
        return Registration(case, replayed=False, linked_as=match.kind)

    async def _replay(self, case_id: UUID, digest: str, screening: Screening) -> Registration:
        """A retried request: answer with the case it created, or the case it joined."""
        if screening.stored or screening.link is None:
            earlier = await in_thread(self.store.get, case_id)
            if earlier is None:
                raise ConcurrencyConflict(f"case {case_id} was stored but cannot be read")
            return _replay(earlier, digest)
        linked_case_id, kind, linked_digest = screening.link
        if linked_digest != digest:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different petition")
        case = await in_thread(self.store.get, linked_case_id)
        return Registration(case, replayed=True, linked_as=kind)


def _new_case(cmd: RegisterPetition, actor: Actor, at: datetime, case_id: UUID, digest: str,
              key: str, number: str, terminated_matter: UUID | None) -> Case:
    case = Case.register(
        case_id=case_id, case_number=number, channel=cmd.channel, category=cmd.category,
        division=cmd.division, subject=cmd.subject, content=cmd.content,
        requests=cmd.requests, people_count=cmd.people_count, petitioner=cmd.petitioner,
        received_at=cmd.received_at, submission_digest=digest, actor=actor, at=at,
        petitioner_key=key, accused_unit=cmd.accused_unit,
        representatives=list(cmd.representatives), contact=cmd.contact,
    )
    if terminated_matter is not None:
        # Handled at two levels, ended at the third: the same matter from the same
        # petitioner is registered (everything is) and not accepted again, in one step.
        case.not_accept_again(
            earlier_case_id=str(terminated_matter), ground="terminated_after_re_review",
            decided_on=local_date(at), actor=actor, at=at,
            reason="the same matter was terminated after re-review")
    return case


def _case_id_for(actor: Actor, idempotency_key: str | None) -> UUID:
    # The key is scoped to the caller, so two callers' keys never collide.
    if not idempotency_key:
        return uuid4()
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{actor.jurisdiction}|{actor.id}|{idempotency_key}")


def _replay(earlier: Case, digest: str) -> Registration:
    if earlier.submission_digest != digest:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different petition"
        )
    return Registration(earlier, replayed=True)


def registration_view(case: Case, linked_as: str | None = None) -> dict[str, Any]:
    view = {
        "case_id": str(case.id),
        "case_number": case.case_number,
        "status": case.status.value,
        "received_at": case.received_at,
    }
    if linked_as is not None:
        view["linked_as"] = linked_as
    return view
