"""Routing: given petition facts, then a decision (and why). Pure; no services needed."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petitions.domain.directory import Directory, Jurisdiction, Unit
from petitions.domain.routing import (
    LITIGATION_CHANNELS,
    NO_RULE,
    PROPOSE_NOT_ACCEPTED,
    ROUTE,
    PetitionFacts,
    Router,
    RoutingRule,
    RuleSet,
    apply_recusal,
    exclude_accused,
    litigation_channel,
)

ROOT = Path(__file__).resolve().parents[2]
PROVINCE, CITY, COUNTIES = "330000", "330100", ("330102", "330106", "330108")
KINDS = ("bureau", "gov", "land", "hr", "housing", "di")
KIND_OF = {"bureau": "bureau", "gov": "government", "di": "discipline_inspection"}


def directory_dict() -> dict[str, Any]:
    """Zhejiang → Hangzhou → three counties; per jurisdiction one unit of each kind; county unit →
    city unit of the same kind → province unit; each unit overseen by its own level's DI."""
    parents = {PROVINCE: None, CITY: PROVINCE, **{c: CITY for c in COUNTIES}}
    jurisdictions = [
        {"code": c, "name": f"J{c}", "parent": p, "bureau_unit_id": f"bureau-{c}"}
        for c, p in parents.items()
    ]
    units = []
    for code, parent in parents.items():
        for k in KINDS:
            units.append(
                {
                    "id": f"{k}-{code}",
                    "name": f"{k.upper()} of {code}",
                    "jurisdiction": code,
                    "kind": KIND_OF.get(k, "department"),
                    "categories": [],
                    "subjects": [],
                    "superior": f"{k}-{parent}" if parent else None,
                    "webhook": "",
                    "discipline_body": (f"di-{parent}" if parent else None) if k == "di"
                    else f"di-{code}",
                }
            )
    return {"jurisdictions": jurisdictions, "units": units}


DIRECTORY = Directory.from_dict(directory_dict())


def rule(id: str, lead: str, *, category: str | None = None, division: str | None = None,
         subject: str | None = None, keywords: tuple[str, ...] = (),
         assisting: tuple[str, ...] = (), priority: int = 0) -> RoutingRule:
    return RoutingRule(id, category, division, subject, keywords, lead, assisting, priority)


def router(*rules: RoutingRule, recusals: dict[str, frozenset[str]] | None = None,
           version: str = "7") -> Router:
    return Router(RuleSet(version, tuple(rules)), DIRECTORY, recusals)


def facts(category: str = "appeal", division: str = "330106", subject: str = "land",
          content: str = "", accused: str | None = None, petitioner: str | None = None
          ) -> PetitionFacts:
    return PetitionFacts(category, division, subject, content, accused, petitioner)


PROVINCE_FALLBACK = rule("fallback", "bureau-330000", division=PROVINCE)


# ------------------------------------------------------------------ ordinary routing


def test_most_specific_division_wins():
    r = router(
        PROVINCE_FALLBACK,
        rule("city-land", "land-330100", category="appeal", division=CITY, subject="land"),
        rule("12", "land-330106", category="appeal", division="330106", subject="land"),
        rule("other-county", "land-330102", category="appeal", division="330102", subject="land"),
    )
    d = r.decide(facts())
    assert (d.outcome, d.lead_unit, d.rule_id) == (ROUTE, "land-330106", "12")
    assert d.rule_set_version == "7"
    assert d.explanation == (
        "appeal in 330106 subject 'land' → unit land-330106 (LAND of 330106), rule 12 of version 7"
    )
    assert d.skipped == ()


def test_then_subject_then_keywords_then_priority_then_id():
    county = dict(category="appeal", division="330106")
    r = router(
        rule("a-any-subject", "bureau-330106", **county, priority=100),
        rule("b-subject", "land-330106", **county, subject="land"),
    )
    assert r.decide(facts()).rule_id == "b-subject"  # subject named beats priority

    r = router(
        rule("one-hit", "land-330106", **county, subject="land", keywords=("征地",)),
        rule("two-hits", "housing-330106", **county, subject="land", keywords=("征地", "补偿")),
        rule("no-hit", "hr-330106", **county, subject="land", keywords=("工资",), priority=9),
    )
    d = r.decide(facts(content="征地补偿款未发放"))
    assert d.rule_id == "two-hits"  # more keyword hits; a rule whose keywords miss never matches
    assert [x.id for x in r.matching_rules(facts(content="征地补偿款未发放"))] == ["two-hits", "one-hit"]

    r = router(
        rule("low", "land-330106", **county, subject="land", priority=1),
        rule("high", "housing-330106", **county, subject="land", priority=5),
    )
    assert r.decide(facts()).rule_id == "high"

    r = router(
        rule("r2", "land-330106", **county, subject="land"),
        rule("r1", "housing-330106", **county, subject="land"),
    )
    assert r.decide(facts()).rule_id == "r1"  # deterministic tie-break on rule id


def test_keywords_match_the_subject_too():
    r = router(rule("kw", "hr-330106", division="330106", keywords=("labour",)), PROVINCE_FALLBACK)
    assert r.decide(facts(subject="labour")).rule_id == "kw"
    assert r.decide(facts(subject="land")).rule_id == "fallback"


def test_fallback_to_province_wide_rule():
    r = router(
        rule("12", "land-330106", category="appeal", division="330106", subject="land"),
        PROVINCE_FALLBACK,
    )
    d = r.decide(facts(division="330108", subject="pension"))
    assert (d.outcome, d.lead_unit, d.rule_id) == (ROUTE, "bureau-330000", "fallback")
    assert "rule fallback of version 7" in d.explanation


def test_no_rule_says_so():
    r = router(rule("12", "land-330106", category="appeal", division="330106", subject="land"))
    d = r.decide(facts(division="110101"))
    assert d.outcome == NO_RULE
    assert d.lead_unit is None and d.rule_id is None and d.assisting_units == ()
    assert "no rule of version 7 matches" in d.explanation


def test_assisting_units_are_kept_without_the_lead():
    r = router(rule("demo", "housing-330106", subject="land",
                    assisting=("land-330106", "land-330100")))
    d = r.decide(facts())
    assert d.lead_unit == "housing-330106"
    assert d.assisting_units == ("land-330106", "land-330100")


# ------------------------------------------------------------------ hard rule a: exclude_accused


def test_exclude_accused_function_drops_the_accused_and_units_inside_it():
    kept, skipped = exclude_accused(
        ["land-330106", "land-330100", "hr-330106", "land-330000"], "land-330100", DIRECTORY
    )
    assert kept == ("hr-330106", "land-330000")
    assert [u for u, _ in skipped] == ["land-330106", "land-330100"]
    assert "inside accused unit land-330100" in dict(skipped)["land-330106"]


def test_accusation_goes_to_discipline_inspection_of_the_accused_superior():
    # a (bad) rule set that names the accused unit as lead and a unit inside it as assisting
    r = router(rule("bad", "land-330100", category="accusation",
                    assisting=("land-330106", "hr-330106")))
    d = r.decide(facts(category="accusation", subject="misconduct", accused="land-330100"))
    assert d.outcome == ROUTE
    assert d.lead_unit == "di-330000"  # land-330100's superior land-330000 is overseen by di-330000
    assert d.assisting_units == ("hr-330106",)
    skipped = dict(d.skipped)
    assert skipped["land-330100"].startswith("excluded: the accused unit")
    assert skipped["land-330106"].startswith("excluded: inside accused unit land-330100")
    assert d.explanation.startswith(
        "accusation against unit land-330100 in 330106 → discipline inspection of land-330100's "
        "superior (unit di-330000, DI of 330000), hard rule; rule set version 7"
    )


def test_accusation_even_when_rules_name_another_unit_goes_to_the_discipline_body():
    r = router(rule("acc", "di-330106", category="accusation", division="330106"))
    d = r.decide(facts(category="accusation", accused="land-330106"))
    assert d.lead_unit == "di-330100"
    assert d.rule_id is None and "hard rule" in d.explanation


def test_accusation_without_an_accused_unit_follows_the_rules():
    r = router(rule("acc", "di-330106", category="accusation", division="330106"))
    d = r.decide(facts(category="accusation"))
    assert (d.lead_unit, d.rule_id) == ("di-330106", "acc")


def test_accusation_against_a_unit_with_no_body_above_it_falls_back_but_never_to_it():
    # the provincial DI has no superior and no discipline body: rules decide, minus the accused
    r = router(rule("acc", "di-330000", category="accusation", division=PROVINCE),
               PROVINCE_FALLBACK)
    d = r.decide(facts(category="accusation", accused="di-330000"))
    assert (d.lead_unit, d.rule_id) == ("bureau-330000", "fallback")
    assert dict(d.skipped)["di-330000"].startswith("excluded")
    # nothing else available: no_rule rather than the accused
    d = router(rule("acc", "di-330000", category="accusation")).decide(
        facts(category="accusation", accused="di-330000"))
    assert d.outcome == NO_RULE and d.lead_unit is None


# ------------------------------------------------------------------ hard rule b: apply_recusal


def test_apply_recusal_function():
    recusals = {"land-330106": frozenset({"p-1"}), "housing-330106": frozenset({"gov-330106"})}
    f = facts(petitioner="p-1", accused="gov-330106")
    pick = apply_recusal(["land-330106", "housing-330106", "hr-330106"], f, recusals, DIRECTORY)
    assert (pick.unit, pick.index) == ("hr-330106", 2)
    assert pick.skipped == (
        ("land-330106", "recusal: declared a conflict with the petitioner"),
        ("housing-330106", "recusal: declared a conflict with accused unit gov-330106"),
    )
    # no free candidate: the best candidate's nearest free superior
    pick = apply_recusal(["land-330106"], f, {**recusals, "land-330100": frozenset({"p-1"})},
                         DIRECTORY)
    assert (pick.unit, pick.index) == ("land-330000", None)
    assert [u for u, _ in pick.skipped] == ["land-330106", "land-330100"]


def test_recused_unit_is_skipped_for_the_next_best_rule():
    r = router(
        rule("12", "land-330106", category="appeal", division="330106", subject="land"),
        PROVINCE_FALLBACK,
        recusals={"land-330106": frozenset({"petitioner-42"})},
    )
    d = r.decide(facts(petitioner="petitioner-42"))
    assert (d.lead_unit, d.rule_id) == ("bureau-330000", "fallback")
    assert d.skipped == (("land-330106", "recusal: declared a conflict with the petitioner"),)
    assert "skipped land-330106 (recusal" in d.explanation
    # another petitioner is unaffected
    assert r.decide(facts(petitioner="someone-else")).lead_unit == "land-330106"


def test_recused_unit_with_no_other_rule_goes_to_its_superior():
    r = router(
        rule("12", "land-330106", category="appeal", division="330106", subject="land",
             assisting=("hr-330106",)),
        recusals={"land-330106": frozenset({"p"}), "hr-330106": frozenset({"p"})},
    )
    d = r.decide(facts(petitioner="p"))
    assert (d.outcome, d.lead_unit, d.rule_id) == (ROUTE, "land-330100", "12")
    assert d.assisting_units == ()  # the recused assisting unit is dropped too
    assert [u for u, _ in d.skipped] == ["land-330106", "hr-330106"]
    assert "superior of land-330106" in d.explanation


def test_recusal_of_the_discipline_body_moves_the_accusation_up():
    r = router(recusals={"di-330100": frozenset({"land-330106"})})
    d = r.decide(facts(category="accusation", accused="land-330106"))
    assert d.lead_unit == "di-330000"
    assert d.skipped == (
        ("di-330100", "recusal: declared a conflict with accused unit land-330106"),
    )


# ------------------------------------------------------------------ hard rule c: litigation_channel


@pytest.mark.parametrize(
    ("subject", "content", "matter"),
    [
        ("litigation", "", "litigation"),
        ("arbitration", "", "arbitration"),
        ("administrative_review", "", "administrative_review"),
        ("labour", "此事已申请劳动仲裁", "arbitration"),
        ("land", "已向法院提起行政诉讼", "litigation"),
        ("land", "已经申请行政复议，后来又提起诉讼", "administrative_review"),
    ],
)
def test_litigation_channel_function(subject, content, matter):
    assert litigation_channel(facts(subject=subject, content=content)) == (
        matter, LITIGATION_CHANNELS[matter])


def test_litigation_channel_ignores_other_matters_and_categories():
    assert litigation_channel(facts(content="征地补偿款未发放")) is None
    # accusations go to discipline inspection; a suggestion about courts is still a suggestion
    assert litigation_channel(facts(category="accusation", content="拖延诉讼")) is None
    assert litigation_channel(facts(category="suggestion", subject="litigation")) is None


def test_litigation_is_proposed_not_accepted_whatever_the_rules_say():
    r = router(rule("any", "land-330106"))
    d = r.decide(facts(subject="labour", content="劳动仲裁裁决后单位仍不支付工资"))
    assert d.outcome == PROPOSE_NOT_ACCEPTED
    assert d.proposed_channel == "labour/commercial arbitration commission"
    assert (d.lead_unit, d.assisting_units, d.rule_id) == (None, (), None)
    assert "arbitration" in d.explanation and "hard rule" in d.explanation


# ------------------------------------------------------------------ directory


def test_directory_lookups():
    d = DIRECTORY
    assert [j.code for j in d.ancestors("330106")] == [CITY, PROVINCE]
    assert d.ancestors(PROVINCE) == []
    assert d.superior_of("land-330106") == d.unit("land-330100")
    assert d.superior_of("land-330000") is None
    assert d.discipline_body_for("land-330106").id == "di-330100"
    assert d.discipline_body_for("di-330106").id == "di-330000"
    assert d.discipline_body_for("land-330000").id == "di-330000"  # own level, nothing above
    assert d.discipline_body_for("di-330000") is None
    assert [u.id for u in d.units_in("330108")] == sorted(f"{k}-330108" for k in KINDS)
    assert d.common_superior("land-330106", "land-330108").id == "land-330100"
    assert d.common_superior("land-330100", "land-330106").id == "land-330100"
    assert d.common_superior("land-330106", "hr-330106").id == "gov-330106"
    assert d.common_superior("land-330106", "hr-330108").id == "gov-330100"
    assert d.is_inside("land-330106", "land-330000")
    assert not d.is_inside("land-330000", "land-330106")
    with pytest.raises(KeyError):
        d.unit("nope")


def _mutate(fn) -> dict[str, Any]:
    d = copy.deepcopy(directory_dict())
    fn(d)
    return d


def _unit(d: dict[str, Any], uid: str) -> dict[str, Any]:
    return next(u for u in d["units"] if u["id"] == uid)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda d: d["jurisdictions"][2].update(parent="330200"),
         "jurisdiction '330102': unknown parent '330200'"),
        (lambda d: d["jurisdictions"][2].update(code="33010"),
         "jurisdiction '33010': bad code"),
        (lambda d: d["jurisdictions"][2].update(parent="330106"),
         "jurisdiction '330102': parent '330106' does not contain it"),
        (lambda d: d["jurisdictions"].append(dict(d["jurisdictions"][0])),
         "jurisdiction '330000': duplicate code"),
        (lambda d: d["jurisdictions"][0].update(bureau_unit_id="nope"),
         "jurisdiction '330000': unknown bureau unit 'nope'"),
        (lambda d: _unit(d, "land-330106").update(superior="land-339999"),
         "unit 'land-330106': unknown superior 'land-339999'"),
        (lambda d: d["units"].append(dict(_unit(d, "hr-330106"))),
         "unit 'hr-330106': duplicate id"),
        (lambda d: _unit(d, "hr-330106").update(jurisdiction="330109"),
         "unit 'hr-330106': unknown jurisdiction '330109'"),
        (lambda d: _unit(d, "hr-330106").update(discipline_body="gov-330106"),
         "unit 'hr-330106': discipline body 'gov-330106' is a 'government'"),
        (lambda d: _unit(d, "hr-330000").update(superior="hr-330106"),
         "superior chain loops"),
        (lambda d: _unit(d, "hr-330106").update(colour="red"),
         "unit #"),
    ],
)
def test_directory_validation_names_the_bad_entry(mutation, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Directory.from_dict(_mutate(mutation))


def test_rule_set_validation_names_the_bad_rule():
    good = {"id": "r1", "category": "appeal", "division": "330106", "subject": "land",
            "keywords": [], "lead_unit": "land-330106"}
    assert RuleSet.from_dict({"version": "1", "rules": [good]}).rules[0].lead_unit == "land-330106"
    for bad, message in [
        ({"category": "apeal"}, "rule #0 ('r1'): unknown category 'apeal'"),
        ({"division": "3301"}, "rule #0 ('r1'): bad division"),
        ({"lead_unit": ""}, "rule #0 ('r1'): 'lead_unit'"),
        ({"keywords": "land"}, "rule #0 ('r1'): 'keywords'"),
        ({"priority": "high"}, "rule #0 ('r1'): 'priority'"),
        ({"colour": "red"}, "rule #0 ('r1'): unknown field"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            RuleSet.from_dict({"version": "1", "rules": [{**good, **bad}]})
    with pytest.raises(ValueError, match="duplicate id"):
        RuleSet.from_dict({"version": "1", "rules": [good, good]})
    with pytest.raises(ValueError, match="'version'"):
        RuleSet.from_dict({"version": "", "rules": []})
    with pytest.raises(ValueError, match="rule 'r1': unknown unit 'land-999999'"):
        Router(RuleSet("1", (rule("r1", "land-999999"),)), DIRECTORY)


# ------------------------------------------------------------------ the shipped configuration


def test_shipped_config_loads_and_routes():
    directory = Directory.from_dict(json.loads((ROOT / "config/directory.json").read_text("utf-8")))
    rules = RuleSet.from_dict(json.loads((ROOT / "config/routing-rules.json").read_text("utf-8")))
    r = Router(rules, directory)
    assert rules.version == "1"
    assert directory.jurisdiction("330106").name == "西湖区"
    assert directory.jurisdiction("330106").bureau_unit_id == "bureau-330106"

    d = r.decide(PetitionFacts("appeal", "330106", "land", "征地补偿款未发放"))
    assert (d.outcome, d.lead_unit) == (ROUTE, "land-330106")
    assert r.decide(PetitionFacts("appeal", "330108", "labour", "")).lead_unit == "hr-330108"
    assert r.decide(PetitionFacts("suggestion", "330102", "traffic", "")).lead_unit == (
        "bureau-330102")
    assert r.decide(PetitionFacts("accusation", "330102", "misconduct", "")).lead_unit == (
        "di-330102")
    assert r.decide(PetitionFacts("appeal", "330100", "land", "")).lead_unit == "bureau-330000"
    accused = r.decide(PetitionFacts("accusation", "330106", "misconduct", "", "land-330106"))
    assert accused.lead_unit == "di-330100"
    for u in directory.units.values():
        assert u.webhook == ""
        if u.superior:
            assert directory.unit(u.superior).kind == u.kind


def test_routing_modules_import_nothing_impure():
    code = (
        "import sys, petitions.domain.routing, petitions.domain.directory\n"
        "bad = {'fastapi', 'grpc', 'nats', 'asyncpg', 'opentelemetry', 'psycopg'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ properties


@st.composite
def random_world(draw):
    """A random superior forest over the sample jurisdictions, random rules and recusals."""
    codes = [PROVINCE, CITY, *COUNTIES]
    n = draw(st.integers(min_value=2, max_value=25))
    units: list[Unit] = []
    for i in range(n):
        kind = draw(st.sampled_from(["department", "discipline_inspection", "bureau"]))
        superior = draw(st.none() | st.sampled_from([u.id for u in units])) if units else None
        dis = [u.id for u in units if u.kind == "discipline_inspection"]
        body = draw(st.none() | st.sampled_from(dis)) if dis else None
        units.append(Unit(f"u{i}", f"Unit {i}", draw(st.sampled_from(codes)), kind,
                          frozenset(), frozenset(), superior, "", body))
    bureaus = [Unit(f"bureau-{c}", f"bureau {c}", c, "bureau", frozenset(), frozenset(), None)
               for c in codes]
    parents = {PROVINCE: None, CITY: PROVINCE, **{c: CITY for c in COUNTIES}}
    directory = Directory(
        [Jurisdiction(c, c, p, f"bureau-{c}") for c, p in parents.items()], [*units, *bureaus]
    )
    ids = [u.id for u in units] + [b.id for b in bureaus]
    rules = draw(st.lists(
        st.builds(
            RoutingRule,
            id=st.text("abc123", min_size=1, max_size=4),
            category=st.none() | st.sampled_from(["accusation", "appeal"]),
            division=st.none() | st.sampled_from(codes),
            subject=st.none() | st.sampled_from(["land", "misconduct"]),
            keywords=st.lists(st.sampled_from(["贪污", "受贿"]), max_size=2).map(tuple),
            lead_unit=st.sampled_from(ids),
            assisting_units=st.lists(st.sampled_from(ids), max_size=3, unique=True).map(tuple),
            priority=st.integers(-3, 3),
        ),
        max_size=15, unique_by=lambda r: r.id,
    ))
    recusals = draw(st.dictionaries(
        st.sampled_from(ids), st.frozensets(st.sampled_from([*ids, "p1", "p2"]), max_size=3),
        max_size=6))
    return directory, RuleSet("v", tuple(rules)), recusals, ids, codes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=random_world(), data=st.data())
def test_property_accusation_never_reaches_the_accused_or_inside_it(world, data):
    directory, rule_set, recusals, ids, codes = world
    accused = data.draw(st.sampled_from(ids))
    f = PetitionFacts(
        "accusation", data.draw(st.sampled_from(codes)),
        data.draw(st.sampled_from(["land", "misconduct"])),
        data.draw(st.sampled_from(["", "贪污", "受贿 贪污", "诉讼"])),
        accused, data.draw(st.none() | st.sampled_from(["p1", "p2"])),
    )
    d = Router(rule_set, directory, recusals).decide(f)
    assert d.outcome in (ROUTE, NO_RULE)
    for u in ([d.lead_unit] if d.lead_unit else []) + list(d.assisting_units):
        assert u != accused
        assert accused not in directory.superior_chain(u)
        assert recusals.get(u, frozenset()).isdisjoint({f.petitioner_key, accused})
    if d.outcome == NO_RULE:
        assert d.lead_unit is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=random_world(), data=st.data())
def test_property_index_agrees_with_brute_force(world, data):
    directory, rule_set, _, _, codes = world
    f = PetitionFacts(
        data.draw(st.sampled_from(["accusation", "appeal", "suggestion"])),
        data.draw(st.sampled_from([*codes, "110101"])),
        data.draw(st.sampled_from(["land", "misconduct", ""])),
        data.draw(st.sampled_from(["", "贪污", "受贿 贪污"])),
    )
    expected = sorted((r for r in rule_set.rules if r.matches(f)), key=lambda r: r.rank_key(f))
    assert Router(rule_set, directory).matching_rules(f) == expected
