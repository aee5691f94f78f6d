"""Property-based tests of the parsers and validators that see untrusted input: whatever comes
in, each either accepts it as something the rest of the system can handle or refuses it with
its own documented error, never with another exception."""
from __future__ import annotations

import base64
import json
import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jwt
import pytest
from fastapi import HTTPException
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import ValidationError

from petitions.domain.access import Role
from petitions.domain.values import (
    Category,
    Channel,
    division_prefix,
    is_division_code,
    is_within,
    local_date,
)
from petitions.infra.auth import ISSUER, InvalidToken, TokenAuthority
from petitions.infra.dsn import as_uri
from services.intake.api import PetitionIn
from services.intake.queries import BadPageToken, decode_page_token, encode_page_token
from services.intake.registration import RegisterPetition

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
NOW = datetime(2026, 3, 16, 9, 30, tzinfo=UTC)

# -- any JSON ------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=40))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=10)

OFFSETS = st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                            max_value=timedelta(hours=23, minutes=59)))
DATETIMES = st.one_of(
    st.datetimes(timezones=OFFSETS).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1),
                 timezones=OFFSETS).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # naive: refused
    st.text(max_size=30),
)
DIVISIONS = st.from_regex(r"\A[1-9]\d{5}\Z") | st.sampled_from(["330106", "330000", "000000"])
TEXT = st.text(max_size=60) | st.text(min_size=190, max_size=210)
PETITIONER = st.fixed_dictionaries(
    {"name": st.text(max_size=110)},
    optional={"id_number": st.from_regex(r"\A\d{17}[\dXx]\Z") | st.text(max_size=20),
              "phone": st.from_regex(r"\A\+?[\d\- ]{5,20}\Z") | st.text(max_size=22),
              "address": st.text(max_size=40), "extra": JSON})

# What a client might plausibly send for each field: mostly well-formed, sometimes anything.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "channel": st.sampled_from([c.value for c in Channel]) | st.text(max_size=12),
    "category": st.sampled_from([c.value for c in Category]) | st.text(max_size=12),
    "division": DIVISIONS | st.text(max_size=8),
    "subject": TEXT,
    "content": TEXT,
    "requests": st.lists(st.text(max_size=30), max_size=52),
    "people_count": st.integers(min_value=-3, max_value=200_000),
    "petitioner": st.none() | PETITIONER,
    "anonymous": st.booleans(),
    "received_at": st.none() | DATETIMES,
    "accused_unit": st.none() | st.text(max_size=110),
    "representatives": st.lists(st.text(max_size=20), max_size=7),
}


@st.composite
def petition_bodies(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)  # not even an object, or an object of anything
    body: dict[str, Any] = {}
    for name in PetitionIn.model_fields:  # the fields as they are today
        if draw(st.integers(0, 7)) == 0:
            continue  # left out
        values = FIELD_VALUES.get(name, JSON)
        body[name] = draw(values | JSON) if draw(st.integers(0, 5)) == 0 else draw(values)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=10))] = draw(JSON)
    return body


def _accepted_is_usable(petition: PetitionIn) -> None:
    try:
        command = petition.to_command(NOW)
    except HTTPException as exc:  # REST's 422 for a received_at in the future
        assert exc.status_code == 422
        assert petition.received_at is not None and petition.received_at > NOW
        return
    assert isinstance(command, RegisterPetition)
    assert re.fullmatch(r"[0-9a-f]{64}", command.digest())
    assert command.received_at.tzinfo is not None
    # Whatever intake accepts, the deadlines service must be able to count from: the
    # acceptance clock starts on the China day the petition was received.
    local_date(command.received_at)
    # And it survives a trip through JSON unchanged (what a retry would send).
    again = PetitionIn.model_validate_json(petition.model_dump_json())
    assert again == petition


@FUZZ
@given(petition_bodies())
@example({"channel": "letter", "category": "appeal", "division": "330106", "subject": "s",
          "content": "c", "anonymous": True, "received_at": "0001-01-01T00:00:00+23:00"})
def test_petition_in_accepts_a_usable_command_or_refuses_with_validation_error(body):
    """Any JSON body: a ValidationError, or a petition whose command the system can handle."""
    for parse in (PetitionIn.model_validate,
                  lambda b: PetitionIn.model_validate_json(json.dumps(b))):
        try:
            petition = parse(body)
        except ValidationError:
            continue
        _accepted_is_usable(petition)


@FUZZ
@given(st.text(max_size=300))
def test_petition_in_from_raw_text_never_raises_anything_else(raw):
    try:
        petition = PetitionIn.model_validate_json(raw)
    except ValidationError:
        return
    _accepted_is_usable(petition)


# -- page tokens ---------------------------------------------------------------------------

POSTGRES_BIGINT_MAX = 2**63 - 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


TOKENS = st.one_of(
    st.text(max_size=100),
    st.text(alphabet=string.ascii_letters + string.digits + "-_=", max_size=100),
    st.binary(max_size=70).map(_b64),
    st.tuples(st.sampled_from(["p", "q", "", "P"]), st.sampled_from([":", "", "::"]),
              st.text(max_size=30)).map(lambda t: _b64("".join(t).encode("utf-8", "replace"))),
    st.integers(min_value=-(10**30), max_value=10**30).map(lambda n: _b64(f"p:{n}".encode())),
)


@FUZZ
@given(TOKENS)
@example(_b64(b"p:99999999999999999999"))  # decodes, but is no position at all
def test_decode_page_token_returns_a_position_or_raises_bad_page_token(token):
    """Garbage is BadPageToken; anything accepted is a position the query can bind (a
    PostgreSQL bigint), as every token this service issues is."""
    try:
        position = decode_page_token(token)
    except BadPageToken:
        return
    assert isinstance(position, int)
    assert 0 <= position <= POSTGRES_BIGINT_MAX, (
        f"page_token {token!r} decodes to {position}, which no issued token holds and "
        f"the bigint query parameter cannot take")


@FUZZ
@given(st.integers(min_value=0, max_value=POSTGRES_BIGINT_MAX))
def test_page_tokens_round_trip(position):
    token = encode_page_token(position)
    assert len(token) <= 100  # what REST's page_token parameter allows
    assert decode_page_token(token) == position


# -- bearer tokens -------------------------------------------------------------------------

KEY = "fuzz-signing-key-0123456789abcdef0123456789"
AUTHORITY = TokenAuthority(KEY)
CLAIM_VALUES = st.one_of(JSON, st.sampled_from([r.value for r in Role]), DIVISIONS,
                         st.integers(min_value=0, max_value=2**40))


@st.composite
def signed_tokens(draw: st.DrawFn) -> str:
    """Correctly signed, with any claims: what a holder of a key could send."""
    now = int(NOW.timestamp()) if draw(st.booleans()) else int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {}
    defaults = {"iss": ISSUER, "sub": "someone", "role": "intake_clerk", "jur": "330106",
                "iat": now, "exp": now + 3600, "unit": "land-330106"}
    for name, default in defaults.items():
        choice = draw(st.integers(0, 5))
        if choice == 0:
            continue
        claims[name] = draw(CLAIM_VALUES) if choice == 1 else default
    claims.update(draw(st.dictionaries(st.text(max_size=5), JSON, max_size=2)))
    headers = draw(st.none() | st.dictionaries(st.sampled_from(["kid", "crit", "typ", "x5u"]),
                                               JSON, max_size=2))
    try:
        return jwt.encode(claims, KEY, algorithm="HS256", headers=headers)
    except (TypeError, ValueError, jwt.PyJWTError):  # refused by the encoder: not a token
        assume(False)
        raise


@st.composite
def forged_tokens(draw: st.DrawFn) -> str:
    """Three dot-separated parts of anything base64url-encoded."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            parts.append(_b64(json.dumps(draw(JSON)).encode()))
        else:
            parts.append(_b64(draw(st.binary(max_size=40))))
    return ".".join(parts)


@FUZZ
@given(st.one_of(st.text(max_size=200), forged_tokens(), signed_tokens()))
@example("")
@example("a.b.c")
def test_verify_returns_a_principal_or_raises_invalid_token(token):
    try:
        principal = AUTHORITY.verify(token)
    except InvalidToken:
        return
    assert is_division_code(principal.jurisdiction)
    assert isinstance(principal.role, Role)
    assert isinstance(principal.subject, str)


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=80), signed_tokens().map(lambda t: f"Bearer {t}")))
def test_from_header_returns_a_principal_or_raises_invalid_token(header):
    try:
        AUTHORITY.from_header(header)
    except InvalidToken:
        pass


# -- DSNs ----------------------------------------------------------------------------------

PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)
                    | st.sampled_from([" ", "é", "信"]), min_size=1, max_size=12)
HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "db.example.internal", "::1", "fe80::1"]),
    st.from_regex(r"\A/[a-zA-Z0-9_./ -]{1,30}\Z"),  # a Unix socket directory
)
EXTRA_PARAMS = st.dictionaries(
    st.sampled_from(["sslmode", "application_name", "connect_timeout", "options"]),
    PRINTABLE, max_size=2)


@st.composite
def dsn_parts(draw: st.DrawFn) -> dict[str, str]:
    parts = {"host": draw(HOSTS), "port": str(draw(st.integers(1, 65535))),
             "dbname": draw(PRINTABLE), "user": draw(PRINTABLE)}
    if draw(st.booleans()):
        parts["password"] = draw(PRINTABLE)
    parts.update(draw(EXTRA_PARAMS))
    return parts


@FUZZ
@given(dsn_parts(), st.booleans())
@example({"host": "/tmp/a b", "port": "5432", "dbname": "x", "user": "postgres"}, True)
@example({"host": "::1", "port": "5433", "dbname": "x", "user": "postgres"}, True)
def test_as_uri_round_trips_every_connection_parameter(parts, as_keywords):
    dsn = make_conninfo(**parts) if as_keywords else as_uri(make_conninfo(**parts))
    uri = as_uri(dsn)
    assert uri.startswith("postgresql://")
    assert conninfo_to_dict(uri) == conninfo_to_dict(dsn), uri
    assert as_uri(uri) == uri  # idempotent


@FUZZ
@given(dsn_parts(), PRINTABLE)
def test_as_uri_names_another_database(parts, dbname):
    uri = as_uri(make_conninfo(**parts), dbname)
    expected = {**conninfo_to_dict(make_conninfo(**parts)), "dbname": dbname}
    assert conninfo_to_dict(uri) == expected, uri


# -- divisions -----------------------------------------------------------------------------

CODES = st.from_regex(r"\A[1-9]\d{5}\Z")
PROVINCES = st.from_regex(r"\A[1-9]\d\Z").map(lambda p: p + "0000")
CITIES = st.from_regex(r"\A[1-9]\d{3}\Z").filter(lambda c: not c.endswith("00")).map(
    lambda c: c + "00")
COUNTIES = CODES.filter(lambda c: not c.endswith("00"))


@FUZZ
@given(CODES)
def test_division_prefix_is_the_code_without_its_zero_levels(code):
    prefix = division_prefix(code)
    assert code.startswith(prefix)
    assert len(prefix) in (2, 4, 6)
    assert code == prefix.ljust(6, "0")
    assert is_within(code, code)  # a jurisdiction contains itself


@FUZZ
@given(PROVINCES, st.from_regex(r"\A\d{4}\Z"), CODES)
def test_a_province_contains_exactly_its_own_codes(province, rest, other):
    assert is_within(province[:2] + rest, province)
    assert is_within(other, province) == (other[:2] == province[:2])


@FUZZ
@given(CITIES, st.from_regex(r"\A\d{2}\Z"), CODES)
def test_a_city_contains_exactly_its_own_codes(city, rest, other):
    assert is_within(city[:4] + rest, city)
    assert is_within(other, city) == (other[:4] == city[:4])


@FUZZ
@given(COUNTIES, CODES)
def test_a_county_contains_only_itself(county, other):
    assert is_within(other, county) == (other == county)


@FUZZ
@given(CODES, CODES, CODES)
def test_within_is_transitive(a, b, c):
    if is_within(a, b) and is_within(b, c):
        assert is_within(a, c)


@FUZZ
@given(st.text(max_size=10), st.text(max_size=10))
def test_division_helpers_never_raise_on_garbage(division, jurisdiction):
    assert isinstance(division_prefix(jurisdiction), str)
    assert isinstance(is_within(division, jurisdiction), bool)
    if is_division_code(jurisdiction) and is_within(division, jurisdiction):
        assert division.startswith(division_prefix(jurisdiction))


@pytest.mark.parametrize("jurisdiction", ["", "00", "0000"])
def test_no_jurisdiction_contains_everything_unless_it_is_a_code(jurisdiction):
    """Principals only ever carry a valid code (TokenAuthority.verify checks); this documents
    what the helper itself does with one that is not."""
    assert not is_division_code(jurisdiction)
