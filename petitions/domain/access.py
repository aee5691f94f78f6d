"""Who may do what, and where: roles, principals and jurisdiction scoping. Pure.

A principal acts inside its jurisdiction's subtree (a county sees its own cases, a province all
of its counties). Anything outside looks like it does not exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from petitions.domain.values import Actor, division_prefix, is_within


class Role(StrEnum):
    INTAKE_CLERK = "intake_clerk"
    HANDLING_UNIT = "handling_unit"
    BUREAU_SUPERVISOR = "bureau_supervisor"
    AUDITOR = "auditor"
    PROVINCE_ADMIN = "province_admin"


class Permission(StrEnum):
    REGISTER = "register"
    READ = "read"
    DECIDE = "decide"          # acceptance decisions, extensions approval, closing, archiving
    HANDLE = "handle"          # progress, replies, hearings, objections (the handling unit)
    AUDIT = "audit"            # verify, export, as-of views
    ADMINISTER = "administer"  # directory, rules, calendars
    READ_IDENTITY = "read_identity"


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.INTAKE_CLERK: frozenset({Permission.REGISTER, Permission.READ, Permission.READ_IDENTITY}),
    Role.HANDLING_UNIT: frozenset({Permission.READ, Permission.HANDLE}),
    Role.BUREAU_SUPERVISOR: frozenset({Permission.REGISTER, Permission.READ, Permission.DECIDE,
                                       Permission.HANDLE, Permission.AUDIT,
                                       Permission.READ_IDENTITY}),
    Role.AUDITOR: frozenset({Permission.READ, Permission.AUDIT}),
    Role.PROVINCE_ADMIN: frozenset(set(Permission)),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: who, in which role, for which jurisdiction (and unit)."""

    subject: str
    role: Role
    jurisdiction: str
    unit_id: str | None = None

    def may(self, permission: Permission) -> bool:
        return permission in PERMISSIONS[self.role]

    def can_see(self, *divisions: str) -> bool:
        """True when any of the case's divisions lies in this principal's subtree."""
        return any(is_within(d, self.jurisdiction) for d in divisions)

    def scope_prefix(self, requested: str | None) -> str | None:
        """The division prefix a listing may cover: the narrower of the requested division and
        this principal's jurisdiction; None when they do not overlap."""
        mine = division_prefix(self.jurisdiction)
        if requested is None:
            return mine
        theirs = division_prefix(requested)
        if theirs.startswith(mine):
            return theirs
        if mine.startswith(theirs):
            return mine
        return None

    def actor(self) -> Actor:
        return Actor(id=self.subject, role=self.role.value, jurisdiction=self.jurisdiction)


class AccessDenied(Exception):
    """The principal lacks the permission (HTTP 403: the case is visible, the act is not)."""

    def __init__(self, principal: Principal, permission: Permission) -> None:
        self.permission = permission
        super().__init__(f"role '{principal.role.value}' may not {permission.value}")


def require(principal: Principal, permission: Permission) -> None:
    if not principal.may(permission):
        raise AccessDenied(principal, permission)
