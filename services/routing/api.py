"""Routing's REST API: the rule table and directory (versioned, every change an event), and
the bureau's routing commands on a case: transfer to another county, manual reassignment,
and escalation of a disputed remit to the units' common superior."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from petitions.domain.access import Permission, Principal, require
from petitions.domain.case import Case
from petitions.domain.errors import RuleViolation
from petitions.domain.matching import petitioner_key
from petitions.domain.routing import accused_exclusion
from petitions.infra.http import current_principal
from petitions.infra.store import CaseStore, in_thread
from services.routing.configuration import ConfigurationHolder

Caller = Annotated[Principal, Depends(current_principal)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]


class RulesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[dict[str, Any]] = Field(max_length=100_000)
    reason: Reason


class DirectoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    directory: dict[str, Any]
    reason: Reason


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_division: str = Field(pattern=r"^[1-9]\d{5}$")
    reason: Reason


class ReassignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit_id: str = Field(min_length=1, max_length=100)
    reason: Reason


class RecusalIn(BaseModel):
    """A unit's declared conflict of interest: with a petitioner (ID number, hashed at once and
    never stored in clear) or with an accused unit."""

    model_config = ConfigDict(extra="forbid")
    unit_id: str = Field(min_length=1, max_length=100)
    petitioner_id_number: str | None = Field(None, pattern=r"^\d{17}[\dXx]$")
    accused_unit: str | None = Field(None, min_length=1, max_length=100)
    reason: Reason


class RemitDisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=2,
                                                                            max_length=10)
    reason: Reason


def mount_routing_routes(app: FastAPI, store: CaseStore, holder: ConfigurationHolder,
                         clock: Callable[[], datetime], identity_hash_key: bytes) -> None:
    _mount_configuration(app, holder, clock)
    _mount_recusals(app, holder, clock, identity_hash_key)
    _mount_case_commands(app, store, holder, clock)


def _mount_recusals(app: FastAPI, holder: ConfigurationHolder, clock: Callable[[], datetime],
                    identity_hash_key: bytes) -> None:
    @app.post("/v1/recusals", tags=["routing"], status_code=201, responses={403: {}, 422: {}})
    async def declare_recusal(body: RecusalIn, caller: Caller) -> dict[str, Any]:
        if caller.unit_id != body.unit_id:
            require(caller, Permission.DECIDE)  # a bureau declares for a unit; a unit for itself
        if (body.petitioner_id_number is None) == (body.accused_unit is None):
            raise HTTPException(422, detail="name either petitioner_id_number or accused_unit")
        conflict = body.accused_unit or petitioner_key(body.petitioner_id_number or "",
                                                       identity_hash_key)
        await _change(holder, lambda c: c.declare_recusal(
            unit_id=body.unit_id, conflict_with=conflict, actor=caller.actor(), at=clock(),
            reason=body.reason))
        return {"unit_id": body.unit_id, "declared": True}


def _mount_configuration(app: FastAPI, holder: ConfigurationHolder,
                         clock: Callable[[], datetime]) -> None:
    @app.get("/v1/routing/rules", tags=["routing"])
    async def get_rules(caller: Caller) -> dict[str, Any]:
        require(caller, Permission.READ)
        return holder.rules_view()

    @app.put("/v1/routing/rules", tags=["routing"], responses={403: {}, 422: {}})
    async def put_rules(body: RulesIn, caller: Caller) -> dict[str, Any]:
        require(caller, Permission.ADMINISTER)
        await _change(holder, lambda c: c.publish_rules(
            body.rules, actor=caller.actor(), at=clock(), reason=body.reason))
        return holder.rules_view()

    @app.get("/v1/directory", tags=["routing"])
    async def get_directory(caller: Caller) -> dict[str, Any]:
        require(caller, Permission.READ)
        return holder.snapshot().directory or {}

    @app.put("/v1/directory", tags=["routing"], responses={403: {}, 422: {}})
    async def put_directory(body: DirectoryIn, caller: Caller) -> dict[str, Any]:
        require(caller, Permission.ADMINISTER)
        await _change(holder, lambda c: c.publish_directory(
            body.directory, actor=caller.actor(), at=clock(), reason=body.reason))
        return holder.snapshot().directory or {}


async def _change(holder: ConfigurationHolder, command: Callable[[Any], None]) -> None:
    try:
        await asyncio.to_thread(holder.change, command)
    except (ValueError, KeyError, TypeError) as exc:  # the new version does not validate
        raise HTTPException(422, detail=str(exc)) from exc


def _mount_case_commands(app: FastAPI, store: CaseStore, holder: ConfigurationHolder,
                         clock: Callable[[], datetime]) -> None:
    async def act(case_id: UUID, caller: Principal, command: Callable[[Case], None]
                  ) -> dict[str, Any]:
        require(caller, Permission.DECIDE)
        case = await in_thread(store.get, case_id)
        if not isinstance(case, Case) or not caller.can_see(*case.jurisdictions):
            raise HTTPException(404, detail=f"no case {case_id}")
        case = await in_thread(store.update, case_id, command)
        return {"case_id": str(case.id), "division": case.division,
                "jurisdictions": case.jurisdictions, "routing": case.routing,
                "remit_disputes": case.remit_disputes, "version": case.version}

    @app.post("/v1/cases/{case_id}/transfer", tags=["cases"],
              responses={403: {}, 404: {}, 409: {}, 422: {}})
    async def transfer(case_id: UUID, body: TransferIn, caller: Caller) -> dict[str, Any]:
        if body.to_division not in holder.directory().jurisdictions:
            raise HTTPException(422, detail=f"unknown jurisdiction {body.to_division}")
        return await act(case_id, caller, lambda c: c.transfer_to_jurisdiction(
            to_division=body.to_division, actor=caller.actor(), at=clock(), reason=body.reason))

    @app.post("/v1/cases/{case_id}/reassignment", tags=["cases"],
              responses={403: {}, 404: {}, 409: {}, 422: {}})
    async def reassign(case_id: UUID, body: ReassignmentIn, caller: Caller) -> dict[str, Any]:
        directory = holder.directory()
        if body.unit_id not in directory:
            raise HTTPException(422, detail=f"unknown unit {body.unit_id}")

        def command(case: Case) -> None:
            # Hard rule: an accusation never goes to the accused unit or anyone in it.
            if case.accused_unit and case.accused_unit in directory:
                why = accused_exclusion(body.unit_id, case.accused_unit, directory)
                if why is not None:
                    raise RuleViolation(f"cannot reassign to {body.unit_id}: {why}")
            case.reassign_to_unit(unit_id=body.unit_id,
                                  unit_name=directory.unit(body.unit_id).name,
                                  actor=caller.actor(), at=clock(), reason=body.reason)

        return await act(case_id, caller, command)

    @app.post("/v1/cases/{case_id}/remit-disputes", tags=["cases"],
              responses={403: {}, 404: {}, 409: {}, 422: {}})
    async def remit_dispute(case_id: UUID, body: RemitDisputeIn,
                            caller: Caller) -> dict[str, Any]:
        directory = holder.directory()
        unknown = [u for u in body.units if u not in directory]
        if unknown:
            raise HTTPException(422, detail=f"unknown units {unknown}")
        superior = directory.common_superior(body.units[0], body.units[1])
        for other in body.units[2:]:
            if superior is not None:
                superior = directory.common_superior(superior.id, other)
        if superior is None:
            raise HTTPException(422, detail="these units have no common superior")
        return await act(case_id, caller, lambda c: c.escalate_remit_dispute(
            units=body.units, common_superior=superior.id, actor=caller.actor(), at=clock(),
            reason=body.reason))

