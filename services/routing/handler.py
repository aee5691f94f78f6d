"""Routing: choose the handling unit for each newly registered (or transferred) case, with
the hard rules no rule set can override (see petitions.domain.routing)."""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from petitions.domain.case import Case
from petitions.domain.directory import Directory
from petitions.domain.routing import PetitionFacts, Router, RoutingDecision
from petitions.domain.values import Actor, CaseStatus
from petitions.infra.batching import Delivery, decide_and_append, rebuild
from petitions.infra.store import CaseStore

ROUTING_ACTOR = Actor(id="routing-service", role="service")
LITIGATION_REASON_CODE = "litigation_arbitration_review"


class RoutingHandler:
    def __init__(self, store: CaseStore, router: Callable[[], Router], directory: Directory,
                 clock: Callable[[], datetime], pool: asyncpg.Pool | None = None) -> None:
        self.store = store
        self.pool = pool
        self.attempts = 20
        self.router = router  # the current rule set's router (rule sets change at run time)
        self.directory = directory
        self.clock = clock

    async def on_batch(self, deliveries: Sequence[Delivery]) -> dict[int, BaseException]:
        """Route the cases of a batch of messages: read them in one query, decide each, and
        append every decision in one transaction. Cases another writer appended to while
        the batch was decided are read and decided again first; a write conflict all the
        same stores nothing of the batch, which is then decided again on fresh state. Each
        decision is made from the case, so this never routes a case twice."""
        assert self.pool is not None, "batch routing reads the cases through the pool"
        _, failures = await decide_and_append(self.pool, self.store, "routing", deliveries,
                                              self._decide, self._save, self.attempts)
        return failures

    def _decide(self, histories: dict[UUID, list[Any]]
                ) -> tuple[dict[UUID, Case], dict[UUID, BaseException]]:
        """The cases with a routing decision to append, and those whose decision failed
        (their messages are redelivered; one bad case never holds back its batch)."""
        changed, failed = {}, {}
        for case_id, events in histories.items():
            try:
                case = rebuild(events)
                self.route(case)
            except Exception as exc:
                failed[case_id] = exc
                continue
            if case.pending_events:
                changed[case_id] = case
        return changed, failed

    async def _save(self, changed: dict[UUID, Case],
                    contexts: dict[UUID, contextvars.Context]) -> None:
        if changed:
            await self.store.save_async(self.pool, *changed.values(),
                                        contexts=[contexts[i] for i in changed])

    def route(self, case: Case) -> None:
        # Idempotent: a redelivered message finds the case already routed.
        if case.is_routed or case.status is not CaseStatus.REGISTERED:
            return
        facts = PetitionFacts(category=case.category.value, division=case.division,
                              subject=case.subject, content=case.content,
                              accused_unit=case.accused_unit or None,
                              petitioner_key=case.petitioner_key or None)
        decision = self.router().decide(facts)
        if decision.outcome == "propose_not_accepted":
            case.propose_non_acceptance(
                reason_code=LITIGATION_REASON_CODE,
                proposed_channel=decision.proposed_channel or "",
                explanation=decision.explanation, rule_set_version=decision.rule_set_version,
                actor=ROUTING_ACTOR, at=self.clock())
            return
        unit_id, explanation = self._unit_for(decision, case.division)
        case.route_to_unit(
            unit_id=unit_id, unit_name=self.directory.unit(unit_id).name,
            rule_id=decision.rule_id or "", rule_set_version=decision.rule_set_version,
            explanation=explanation, actor=ROUTING_ACTOR, at=self.clock(),
            assisting_units=list(decision.assisting_units), skipped=list(decision.skipped),
        )

    def _unit_for(self, decision: RoutingDecision, division: str) -> tuple[str, str]:
        if decision.outcome == "route" and decision.lead_unit:
            return decision.lead_unit, decision.explanation
        # No unit chosen by the rules: the petition bureau of the nearest jurisdiction decides.
        bureau = nearest_bureau(self.directory, division)
        return bureau, f"{decision.explanation}; referred to petition bureau {bureau} to decide"


def nearest_bureau(directory: Directory, division: str) -> str:
    """The bureau of the division, else of its city, else of its province, else the root's."""
    known = directory.jurisdictions
    for code in (division, division[:4] + "00", division[:2] + "0000"):
        if code in known:
            return known[code].bureau_unit_id
    root = next(j for j in known.values() if j.parent is None)
    return root.bureau_unit_id
