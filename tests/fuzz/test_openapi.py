"""schemathesis against every service's OpenAPI schema, on a running system: whatever the
schema allows (and a good deal it does not), no 5xx, and every response matches the schema.
Then stateful sequences along the links between operations (a registered case is read back).

Bounded: at most MAX_EXAMPLES generated requests per operation, no Hypothesis deadline."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any
from uuid import uuid4

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import bearer

pytestmark = pytest.mark.e2e

# Per operation: 20 requests with data the schema allows, 10 with data it does not.
EXAMPLES = {"positive": 20, "negative": 10}
MAX_EXAMPLES = sum(EXAMPLES.values())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
# Divisions the callers below may register for; others are (correctly) refused with 403.
KNOWN_DIVISIONS = ["330106", "330108", "330102", "330100", "330000"]


def _config(token: str, base_url: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "allow-x00": True,
                       "database": "none"},
        "phases": {"stateful": {"max-steps": 8}},
    })


def _registrable(drawn: tuple[Any, bool, str]) -> Any:
    """Half the generated petitions are made registrable: a division the caller may register
    for, named or anonymous consistently, received now. (Rules across fields that a JSON
    schema cannot express would otherwise refuse nearly all of them.)"""
    body, make_registrable, division = drawn
    if not (make_registrable and isinstance(body, dict) and "division" in body):
        return body
    body = {**body, "division": division, "anonymous": body.get("petitioner") is None}
    body.pop("received_at", None)
    return body


def _with_case_links(raw: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI links from a registration (its case_id) to every operation on one case, for
    the stateful phase: register, then read, verify, export, accept, close ... that case."""
    registered = (raw.get("paths", {}).get("/v1/petitions", {}).get("post", {})
                  .get("responses", {}))
    links: dict[str, Any] = {}
    for path, operations in raw.get("paths", {}).items():
        if not path.startswith("/v1/cases/{case_id}") or path.count("{") != 1:
            continue
        for method, operation in operations.items():
            if isinstance(operation, dict) and "operationId" in operation:
                links[f"{method.upper()} {path}"] = {
                    "operationId": operation["operationId"],
                    "parameters": {"case_id": "$response.body#/case_id"}}
    for status in ("200", "201"):
        if status in registered:
            registered[status]["links"] = links
    return raw


def _load(system, service: str, token: str) -> Any:
    raw = httpx.get(f"{system.urls[service]}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(_with_case_links(raw),
                                            config=_config(token, system.urls[service]))

    @schema.hook
    def before_generate_body(ctx, strategy):
        if getattr(ctx.operation, "path", None) != "/v1/petitions":
            return strategy
        return st.tuples(strategy, st.booleans(), st.sampled_from(KNOWN_DIVISIONS)).map(
            _registrable)

    return schema


@pytest.fixture(scope="session")
def province_admin(tokens) -> str:
    return tokens["province_admin"]


@pytest.fixture(scope="module")
def schemas(fuzz_system, province_admin) -> dict[str, Any]:
    return {name: _load(fuzz_system, name, province_admin) for name in fuzz_system.urls}


def _runner(operation: Any, mode: GenerationMode, token: str,
            answers: Counter[str]) -> Any:
    """A Hypothesis test sending `operation` requests of one generation mode."""
    @settings(FUZZ, max_examples=EXAMPLES[mode.value])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=bearer(token), checks=CHECKS, timeout=30)
        answers[f"{operation.label} {response.status_code}"] += 1

    return run


def _fuzz(schema: Any, token: str) -> tuple[list[str], Counter[str]]:
    """Every operation, positive and negative data: each failure found, and what answered.

    (schemathesis' own pytest plugin does not run on this pytest, so operations are driven
    through their Hypothesis strategies directly.)"""
    failures: list[str] = []
    answers: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(operation, mode, token, answers)()
            except Unsatisfiable:
                pass  # nothing to negate (no parameters, no body): nothing to send
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, reported
                # (schemathesis' FailureGroup is a BaseExceptionGroup)
                failures.append(f"{operation.label} [{mode.value}]: {_brief(exc)}")
    return failures, answers


def _brief(exc: BaseException) -> str:
    """The gist of a schemathesis failure: what was wrong, the answer, how to reproduce."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines()]
    keep: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(("- ST", "curl ")):
            keep.append(line)
            detail = next((n for n in lines[i + 1:] if n), "")
            if line.startswith("- ST") and detail:
                keep.append("  " + detail)
        elif re.match(r"^\[\d{3}\] ", line):
            body = next((n for n in lines[i + 1:] if n), "")
            keep.append(f"{line} {body[:300]}")
    return "\n    ".join(keep) if keep else text[:2000]


@pytest.mark.parametrize("service", ["intake", "routing", "deadlines", "notify"])
def test_every_operation_answers_without_5xx_and_as_documented(schemas, province_admin,
                                                                fuzz_system, service):
    failures, answers = _fuzz(schemas[service], province_admin)
    print(f"[fuzz:{service}] {dict(sorted(answers.items()))}")
    assert not failures, "\n\n".join(failures)
    assert fuzz_system.alive(service)


def _new_to_the_system(case: Any, sequence: str) -> None:
    """Make a registration of this sequence new to the system: its subject and content (what
    a repeat and a duplicate are matched on) and its Idempotency-Key carry the sequence's
    mark. Hypothesis walks a drawn prefix again; without this, the petition it registered the
    first time would be answered as a repeat (200), a duplicate or a retry, the answer would
    no longer feed the next steps, and hypothesis would stop as on a flaky strategy. Within
    one sequence the same petition twice is still a repeat."""
    if case.operation.label != "POST /v1/petitions":
        return
    if isinstance(case.body, dict):
        for field, limit in (("subject", 200), ("content", 50_000)):
            value = case.body.get(field)
            if isinstance(value, str) and value:
                case.body[field] = f"{sequence} {value}"[:limit]
    key = (case.headers or {}).get("idempotency-key")
    if isinstance(key, str) and key:
        case.headers["idempotency-key"] = f"{sequence}{key}"[:200]


def test_intake_api_stateful(schemas, province_admin, fuzz_system):
    """Sequences along the links schemathesis infers between operations (a registration's
    case_id and Location feed the case, events, ... operations): each step answers without
    5xx and as documented, and some steps do act on a case registered earlier."""
    machine = schemas["intake"].as_state_machine()
    steps: Counter[str] = Counter()

    class Authenticated(machine):  # type: ignore[misc, valid-type]
        def setup(self):
            self.sequence = uuid4().hex[:8]

        def before_call(self, case):
            _new_to_the_system(case, self.sequence)

        def get_call_kwargs(self, case):
            return {"headers": bearer(province_admin), "timeout": 30}

        def after_call(self, response, case):
            steps[f"{case.operation.label} {response.status_code}"] += 1

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    # Every sequence's petitions are new to the system (see `_new_to_the_system`), so the
    # same drawn sequence gets the same answers each time hypothesis walks it.
    # No shrinking: replaying a sequence against a live system that has moved on (cases
    # registered, numbers taken) is not a replay; the first failing sequence is the report.
    # Derandomized, so every run starts from the same sequences. The links feed live answers
    # into later steps.
    Authenticated.run(settings=settings(max_examples=30, stateful_step_count=6, deadline=None,
                                        suppress_health_check=list(HealthCheck),
                                        database=None, derandomize=True,
                                        phases=[Phase.explicit, Phase.generate]))
    print(f"[fuzz:stateful] {dict(sorted(steps.items()))}")
    assert fuzz_system.alive("intake")
    # a 200 or a 409 (the case is there, in another state) on an operation of one case shows
    # a registered case's id followed into the next step
    followed = [k for k in steps if "/v1/cases/{case_id}" in k and k.endswith((" 200", " 409"))]
    assert followed, f"no step acted on a registered case: {dict(steps)}"


@pytest.mark.parametrize("service", ["intake", "routing", "deadlines", "notify"])
def test_every_service_survived_the_fuzzing(fuzz_system, service):
    assert fuzz_system.alive(service), f"{service} died; logs: {fuzz_system.cluster.log_dir}"
