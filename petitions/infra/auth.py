"""Bearer tokens: HMAC-signed (HS256) JWTs naming a subject, role, jurisdiction and unit.

Mint one with `python -m petitions.infra.auth mint --subject clerk-1 --role intake_clerk
--jurisdiction 330106` (the key is AUTH_SIGNING_KEY).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt

from petitions.domain.access import Principal, Role
from petitions.domain.values import is_division_code

ALGORITHM = "HS256"
ISSUER = "petitions"
# Verified tokens remembered, oldest forgotten first: platforms send the same few service
# tokens on every request, and checking the signature and claims again each time cost about
# a tenth of a registration's CPU.
VERIFIED_TOKENS_KEPT = 4096


class InvalidToken(Exception):
    pass


class TokenAuthority:
    def __init__(self, signing_key: str, *, clock: Callable[[], float] = time.time) -> None:
        self.key = signing_key
        self.clock = clock
        # token -> (principal, expiry): only tokens that passed every check, keyed by the whole
        # token, signature included, so no other string can find an entry.
        self._verified: dict[str, tuple[Principal, float]] = {}

    def mint(self, principal: Principal, ttl_seconds: int = 3600 * 24 * 30) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": principal.subject, "role": principal.role.value,
            "jur": principal.jurisdiction, "iat": now, "exp": now + ttl_seconds,
        }
        if principal.unit_id:
            claims["unit"] = principal.unit_id
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The principal a valid, unexpired token names; InvalidToken otherwise."""
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if self.clock() < expires:
                return principal
            self._verified.pop(token, None)
        principal, expires = self._check(token)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.pop(next(iter(self._verified)), None)
        self._verified[token] = (principal, expires)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        # Only expiry can turn a verified token invalid later ("nbf" and "iat" only become
        # more valid), so the remembered result is good until "exp". Expiry is checked here,
        # on this authority's clock, so a remembered and a fresh check agree.
        try:
            claims = jwt.decode(token, self.key, algorithms=[ALGORITHM], issuer=ISSUER,
                                options={"require": ["exp", "sub", "iss"], "verify_exp": False})
            expires = _expiry(claims["exp"])
            if self.clock() >= expires:
                raise jwt.ExpiredSignatureError("Signature has expired")
            role = Role(claims["role"])
            jurisdiction = str(claims["jur"])
        except (jwt.PyJWTError, KeyError, ValueError) as exc:
            raise InvalidToken(str(exc) or type(exc).__name__) from exc
        if not is_division_code(jurisdiction):
            raise InvalidToken("token names no valid jurisdiction")
        return Principal(str(claims["sub"]), role, jurisdiction, claims.get("unit")), expires

    def from_header(self, authorization: str | None) -> Principal:
        if not authorization:
            raise InvalidToken("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("expected 'Authorization: Bearer <token>'")
        return self.verify(token.strip())


def _expiry(exp: Any) -> float:
    """The "exp" claim as PyJWT reads it (an integer, or what int() takes)."""
    try:
        return float(int(exp))
    except (TypeError, ValueError, OverflowError) as exc:
        raise jwt.DecodeError("Expiration Time claim (exp) must be an integer.") from exc


def dev_principals(counties: list[str], province: str) -> dict[str, Principal]:
    """The development principals `make run` writes tokens for."""
    principals = {
        "province_admin": Principal("province-admin", Role.PROVINCE_ADMIN, province),
        "province_auditor": Principal("province-auditor", Role.AUDITOR, province),
    }
    for county in counties:
        principals[f"county_{county}_clerk"] = Principal(
            f"clerk-{county}", Role.INTAKE_CLERK, county)
        principals[f"county_{county}_supervisor"] = Principal(
            f"supervisor-{county}", Role.BUREAU_SUPERVISOR, county)
    return principals


def main(argv: list[str]) -> int:
    from petitions.infra.settings import CommonAuthSettings

    parser = argparse.ArgumentParser(prog="python -m petitions.infra.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="mint a bearer token (key: AUTH_SIGNING_KEY)")
    mint.add_argument("--subject", required=True)
    mint.add_argument("--role", required=True, choices=[r.value for r in Role])
    mint.add_argument("--jurisdiction", required=True)
    mint.add_argument("--unit")
    mint.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    if not is_division_code(args.jurisdiction):
        parser.error("--jurisdiction must be a 6-digit division code")
    authority = TokenAuthority(CommonAuthSettings().auth_signing_key)
    principal = Principal(args.subject, Role(args.role), args.jurisdiction, args.unit)
    print(json.dumps({"token": authority.mint(principal, args.days * 86400)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
