"""Notify's documents, routes and confidentiality rules, without I/O."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from petitions.domain.directory import Directory
from petitions.infra.settings import REPO_ROOT
from services.notify.config import Contacts, Routes
from services.notify.confidentiality import (
    ConfidentialityBreach,
    assert_clean,
    find_identity,
    identity_terms,
    scrub,
)
from services.notify.documents import Renderer, cn_date, html_to_pdf
from services.notify.facts import CaseFacts, fold
from services.notify.plan import Planner, Trigger, kinds_for
from services.notify.webhook import body_text, encode_body

CONFIG = REPO_ROOT / "config"
PETITIONER = {"name": "张三丰", "id_number": "330106199001011234", "phone": "13800000000",
              "address": "西湖区转塘街道某村12号"}
IDENTITY = list(PETITIONER.values())


def load(name: str):
    return json.loads((CONFIG / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def directory() -> Directory:
    return Directory.from_dict(load("directory.json"))


@pytest.fixture(scope="module")
def planner(directory) -> Planner:
    return Planner(directory, Routes.from_dict(load("notify-routes.json")),
                   Contacts.from_dict(load("notify-contacts.json")), Renderer())


def facts(**overrides) -> CaseFacts:
    f = CaseFacts(
        case_id="11111111-1111-4111-8111-111111111111", version=3,
        case_number="330106-2026-000042", division="330106", channel="letter",
        category="appeal", subject="宅基地分配",
        # the author names himself and his phone in the text: units must not see either
        content="我是张三丰，电话138 0000 0000，村里重新分配宅基地时漏掉了我家",
        requests=["重新丈量并登记（联系人张三丰）"], people_count=1,
        petitioner=dict(PETITIONER), received_at="2026-09-28T09:30:00+08:00",
        lead_unit="land-330106", lead_unit_name="西湖区自然资源和规划局",
        clocks={"acceptance": {"due_on": "2026-10-13"}},
    )
    for k, v in overrides.items():
        setattr(f, k, v)
    return f


def trigger(etype: str, version: int = 4, **data) -> Trigger:
    return Trigger("11111111-1111-4111-8111-111111111111", version, etype,
                   "2026-09-29T02:00:00+00:00", data)


EVENTS = [
    ("RoutedToUnit", {"unit_id": "land-330106", "unit_name": "西湖区自然资源和规划局",
                      "explanation": "subject land → land-330106"}),
    ("Accepted", {"mode": "assign", "lead_unit": "land-330106",
                  "assisting_units": ["housing-330106"], "decided_on": "2026-09-29"}),
    ("Accepted", {"mode": "transfer", "lead_unit": "land-330106", "assisting_units": [],
                  "decided_on": "2026-09-29"}),
    ("NotAccepted", {"reason_code": "litigation", "redirect_organ": "西湖区人民法院",
                     "decided_on": "2026-09-29"}),
    ("NotAcceptedAgain", {"earlier_case_id": "x", "ground": "terminated",
                          "decided_on": "2026-09-29"}),
    ("ExtensionGranted", {"days": 30, "approver": "局长王某", "reason": "需要组织听证",
                          "petitioner_told": True}),
    ("Replied", {"outcome": "supported", "reply_text": "经调查，决定重新丈量。\n请于十日内联系。",
                 "replied_on": "2026-11-20"}),
    ("ClockWarned", {"clock": "handling", "due_on": "2026-11-28", "kind": "reminder"}),
    ("ClockMissed", {"clock": "handling", "due_on": "2026-11-28"}),
    ("ClockWarned", {"clock": "acceptance", "due_on": "2026-10-13", "kind": "reminder"}),
    ("EscalationProposed", {"reason": "两次催办仍未办结", "proposed_action": "通报批评"}),
    ("EmergencyReported", {"occurred_at": "2026-09-29T01:15:00+00:00", "place": "区政府门口",
                           "scale": "约30人聚集", "people": "张三丰等村民", "cause": "宅基地分配",
                           "requests": ["见区长"], "nature": "集体访可能引发群体性事件"}),
]


@pytest.mark.parametrize("etype, data", EVENTS, ids=[f"{e}-{i}" for i, (e, _) in
                                                     enumerate(EVENTS)])
def test_every_document_renders_in_chinese_and_units_never_see_identity(planner, etype, data):
    plan = planner.plan(facts(), trigger(etype, **data))
    assert plan.documents, etype
    kinds = {d.kind for d in plan.documents}
    assert kinds == set(kinds_for(etype, data))
    for doc in plan.documents:
        assert doc.html.startswith("<!DOCTYPE html>")
        assert doc.title in doc.html and doc.text
        assert "330106-2026-000042" in doc.html
        if doc.for_petitioner:
            assert PETITIONER["name"] in doc.html
        else:
            assert not find_identity(doc.html + doc.text + json.dumps(doc.data, ensure_ascii=False),
                                     IDENTITY), (doc.kind, doc.recipient)


def test_what_goes_where(planner):
    def routes(etype, **data):
        plan = planner.plan(facts(), trigger(etype, **data))
        return sorted((d.recipient, d.channel, d.kind) for d in plan.deliveries)

    assert routes("RoutedToUnit", unit_id="land-330106", unit_name="x", explanation="") == [
        ("land-330106", "webhook", "assignment_slip")]
    assert routes("Accepted", mode="assign", lead_unit="land-330106",
                  assisting_units=["housing-330106"], decided_on="2026-09-29") == [
        ("housing-330106", "webhook", "assignment_slip"),
        ("land-330106", "webhook", "assignment_slip"),
        ("petitioner", "sms", "acceptance_notice")]  # no e-mail on file: optional, skipped
    assert routes("Accepted", mode="transfer", lead_unit="land-330106", assisting_units=[],
                  decided_on="2026-09-29")[0] == ("land-330106", "webhook", "transfer_slip")
    # the acceptance clock runs against the bureau, the handling clock against the lead unit
    assert routes("ClockWarned", clock="acceptance", due_on="2026-10-13")[0][0] == "bureau-330106"
    assert routes("ClockMissed", clock="handling", due_on="2026-10-13") == [
        ("land-330106", "email", "supervision_notice"),
        ("land-330106", "webhook", "supervision_notice")]
    # 330106 overrides the emergency report: the bureau by e-mail and the leader by SMS too
    assert routes("EmergencyReported", occurred_at="2026-09-29T01:15:00+00:00", place="p",
                  scale="s", people="", cause="c", requests=[], nature="n") == [
        ("bureau-330106", "email", "emergency_report"),
        ("bureau-330106", "webhook", "emergency_report"),
        ("leader:leader-330106", "email", "emergency_report"),
        ("leader:leader-330106", "sms", "emergency_report")]


def test_slips_name_the_role_and_the_unit(planner):
    plan = planner.plan(facts(), trigger("Accepted", mode="assign", lead_unit="land-330106",
                                         assisting_units=["housing-330106"], decided_on="x"))
    slips = {d.recipient: d for d in plan.documents if d.kind == "assignment_slip"}
    assert "交办单（主办）" in slips["land-330106"].html
    assert "交办单（协办）" in slips["housing-330106"].html
    assert "西湖区住房和城乡建设局" in slips["housing-330106"].html
    notice = next(d for d in plan.documents if d.kind == "acceptance_notice")
    assert "西湖区自然资源和规划局" in notice.html and "60日" in notice.html


def test_not_accepted_gives_the_reason_and_where_to_go(planner):
    doc = planner.plan(facts(), trigger("NotAccepted", reason_code="litigation",
                                        redirect_organ="西湖区人民法院", decided_on="x")).documents[0]
    assert "不予受理告知书" in doc.html and "诉讼" in doc.html and "西湖区人民法院" in doc.html
    again = planner.plan(facts(), trigger("NotAcceptedAgain", earlier_case_id="e",
                                          ground="terminated", decided_on="x")).documents[0]
    assert "不再受理告知书" in again.html and "终结" in again.html


def test_extension_notice_gives_its_reason(planner):
    doc = planner.plan(facts(), trigger("ExtensionGranted", days=30, approver="局长",
                                        reason="需要组织听证", petitioner_told=True)).documents[0]
    assert "延长30日" in doc.html and "需要组织听证" in doc.html


def test_anonymous_petitioners_get_no_notices(planner):
    plan = planner.plan(facts(anonymous=True, petitioner=None),
                        trigger("Accepted", mode="assign", lead_unit="land-330106",
                                assisting_units=[], decided_on="x"))
    assert [d.recipient for d in plan.deliveries] == ["land-330106"]
    assert not planner.plan(facts(anonymous=True, petitioner=None),
                            trigger("Replied", outcome="x", reply_text="y",
                                    replied_on="z")).deliveries


def test_a_joint_petition_is_answered_through_its_contact(planner):
    contact = {"name": "李四", "phone": "13911111111"}
    f = facts(contact=contact)
    plan = planner.plan(f, trigger("Replied", outcome="supported", reply_text="ok",
                                   replied_on="2026-11-20"))
    assert "李四" in plan.documents[0].html
    assert planner.address("petitioner", "petitioner", "sms", f) == "13911111111"


def test_a_collective_visit_is_answered_through_each_representative(planner):
    reps = [{"name": "王五", "phone": "13700000001", "email": "wangwu@example.cn"},
            {"name": "赵六", "phone": "13700000002"}]
    f = facts(channel="visit", people_count=12, representatives=reps)
    plan = planner.plan(f, trigger("Replied", outcome="supported", reply_text="ok",
                                   replied_on="2026-11-20"))
    sent = sorted((d.recipient, d.channel) for d in plan.deliveries)
    # e-mail is optional on this route: only the representative with an address gets one
    assert sent == [("representative:1", "email"), ("representative:1", "sms"),
                    ("representative:2", "sms")]
    assert planner.address("petitioner", "representative:2", "sms", f) == "13700000002"
    assert planner.address("petitioner", "representative:2", "email", f) == ""
    by_recipient = {d.recipient: d.html for d in plan.documents}
    assert "王五" in by_recipient["representative:1"] and "赵六" not in by_recipient[
        "representative:1"]
    # the petitioner registered for the visit is told through the representatives only
    assert "petitioner" not in {d.recipient for d in plan.deliveries}


def test_representatives_identity_never_reaches_a_unit(planner):
    reps = [{"name": "王五", "phone": "13700000001", "email": "wangwu@example.cn"}]
    f = facts(channel="visit", people_count=6, representatives=reps,
              content="代表王五（13700000001，wangwu@example.cn）反映")
    plan = planner.plan(f, trigger("RoutedToUnit", unit_id="land-330106", unit_name="x",
                                   explanation=""))
    [doc] = [d for d in plan.documents if d.recipient == "land-330106"]
    for term in ("王五", "13700000001", "wangwu@example.cn"):
        assert term not in doc.html and term not in doc.text


def test_the_accused_unit_never_gets_the_accusation(planner):
    f = facts(category="accusation", accused_unit="land-330106")
    plan = planner.plan(f, trigger("Accepted", mode="assign", lead_unit="land-330106",
                                   assisting_units=["housing-330106"], decided_on="x"))
    assert "land-330106" not in {d.recipient for d in plan.deliveries}
    assert plan.skipped


def test_identity_is_scrubbed_from_unit_documents_even_inside_free_text(planner):
    f = facts(representatives=[{"name": "王五", "phone": "13700000001"}, {"name": "赵六"}],
              content="代表王五、赵六反映；身份证330106199001011234")
    plan = planner.plan(f, trigger("RoutedToUnit", unit_id="land-330106", unit_name="x",
                                   explanation=""))
    html = plan.documents[0].html
    assert "王五" not in html and "赵六" not in html and "330106199001011234" not in html
    assert "某某" in html


def test_scrub_and_guard():
    terms = identity_terms(facts())
    assert scrub("电话 138-0000-0000，张三丰", terms) == "电话 某某，某某"
    with pytest.raises(ConfidentialityBreach) as err:
        assert_clean("联系 138 0000 0000", terms)
    assert "13800000000" not in str(err.value)
    assert_clean("案件 330106-2026-000042 2026年10月13日", terms)  # numbers that are not identity
    # separators the term matcher does not allow for (several, mixed) still hit as a number
    for spaced in ("138 - 0000 - 0000", "1 3 8 0 0 0 0 0 0 0 0", "身份证3301061990  0101-1234"):
        with pytest.raises(ConfidentialityBreach):
            assert_clean(spaced, terms)
    # digits of the number split by anything else are another matter
    assert_clean("138/0000/0000 138.0000.0000", terms)


def test_templates_autoescape(planner):
    plan = planner.plan(facts(subject="<script>alert(1)</script>"),
                        trigger("RoutedToUnit", unit_id="land-330106", unit_name="x",
                                explanation=""))
    assert "<script>" not in plan.documents[0].html
    assert "&lt;script&gt;" in plan.documents[0].html


def test_templates_fall_back_from_county_to_province_to_default(tmp_path: Path, directory):
    accepted = trigger("Accepted", mode="assign", lead_unit="land-330106", assisting_units=[],
                       decided_on="x")
    routes = Routes.from_dict(load("notify-routes.json"))
    contacts = Contacts.from_dict(load("notify-contacts.json"))
    builtin = Planner(directory, routes, contacts, Renderer())
    xihu = builtin.plan(facts(), accepted).documents[0]
    assert xihu.template == "330106/acceptance_notice.html"  # the county's own
    binjiang = builtin.plan(facts(division="330108"), accepted).documents[0]
    assert binjiang.template == "default/acceptance_notice.html"

    # a province's directory: its own default wins over the built-in one for every county,
    # a county override of its own wins over that
    (tmp_path / "330000").mkdir()
    (tmp_path / "330000" / "acceptance_notice.html").write_text(
        '{% extends "_base.html" %}{% block body %}<p>浙江省统一格式 {{ case.case_number }}</p>'
        '{% endblock %}', "utf-8")
    province = Planner(directory, routes, contacts, Renderer(tmp_path))
    doc = province.plan(facts(division="330108"), accepted).documents[0]
    assert doc.template == "330000/acceptance_notice.html"
    assert "浙江省统一格式 330106-2026-000042" in doc.html and "<h1>受理告知书</h1>" in doc.html
    assert province.plan(facts(), accepted).documents[0].template == "330000/acceptance_notice.html"


def test_template_lookups_on_context_dicts_keep_jinja_semantics(tmp_path: Path):
    # fields are read as keys first, but a dict's methods, a missing field's `is defined`
    # and attributes of non-dicts behave as Jinja has them
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "probe.html").write_text(
        "{{ case.subject }}|{% for k, v in case.deadlines.items() %}{{ k }}={{ v }};{% endfor %}"
        "|{{ case.get('absent', 'none') }}|{% if case.content is defined %}C{% else %}N{% endif %}"
        "|{{ case.keys is callable }}|{{ text.upper() }}|{{ case.subject.missing is defined }}",
        "utf-8")
    (tmp_path / "default" / "probe.txt").write_text("{{ case.subject }}", "utf-8")
    html, text, template = Renderer(tmp_path).render(
        "probe", "330106",
        {"case": {"subject": "<宅基地>", "deadlines": {"受理": "10月13日"}, "keys": "k"},
         "text": "ab"})
    assert html == "&lt;宅基地&gt;|受理=10月13日;|none|N|True|AB|False"
    assert text == "<宅基地>" and template == "default/probe.html"


def test_webhook_body_bytes_are_the_sorted_json_encoding():
    # a resend after an upgrade must be byte-for-byte the body signed before it
    payload = {"b": ["交办单", {"z": 1, "a": None}], "a": "\"<>\u2028"}
    expected = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()
    assert encode_body(payload) == expected
    assert body_text(payload).encode() == expected


def test_routes_longest_prefix_per_kind_and_validation():
    routes = Routes.from_dict({"routes": {
        "33": {"reply": [{"party": "petitioner", "channel": "sms"}],
               "reminder": [{"party": "lead_unit", "channel": "webhook"}]},
        "3301": {"reply": [{"party": "petitioner", "channel": "email"}]},
    }})
    assert routes.for_kind("330106", "reply")[0].channel == "email"
    assert routes.for_kind("330106", "reminder")[0].party == "lead_unit"
    assert routes.for_kind("340106", "reply") == ()
    for bad in ({"routes": {"33": {"nonsense": []}}},
                {"routes": {"33": {"reply": [{"party": "mayor", "channel": "sms"}]}}},
                {"routes": {"33": {"reply": [{"party": "petitioner", "channel": "fax"}]}}},
                {"routes": {"33": {"reply": [{"party": "petitioner", "channel": "webhook"}]}}},
                {"routes": {"x": {}}}):
        with pytest.raises(ValueError):
            Routes.from_dict(bad)


def test_contacts_leaders_fall_back_up_the_tree():
    contacts = Contacts.from_dict(load("notify-contacts.json"))
    assert contacts.leaders_for("330106")[0].id == "leader-330106"
    assert contacts.leaders_for("330102")[0].id == "leader-330100"
    assert contacts.unit("land-330106").email == "zrzy@xihu.example"
    assert contacts.unit("nobody").email == ""
    with pytest.raises(ValueError):
        Contacts.from_dict({"units": {"u": {"fax": "1"}}})


def test_facts_fold_reads_the_events():
    f = fold("c", [
        ("Registered", 1, "t1", {"case_number": "n", "division": "330106", "channel": "visit",
                                 "category": "appeal", "subject": "s", "content": "c",
                                 "requests": [], "people_count": 6, "anonymous": False,
                                 "petitioner": {"name": "甲"}, "representatives": ["甲", "乙"],
                                 "received_at": "2026-01-01T00:00:00+00:00"}),
        ("RoutedToUnit", 2, "t2", {"unit_id": "u1", "unit_name": "U1", "explanation": "e"}),
        ("Accepted", 3, "t3", {"mode": "transfer", "lead_unit": "u2",
                               "assisting_units": ["u3"], "decided_on": "d"}),
    ])
    assert (f.lead_unit, f.assisting_units, f.mode, f.version) == ("u2", ["u3"], "transfer", 3)
    assert f.representatives == [{"name": "甲"}, {"name": "乙"}]  # v2 data: names only
    assert fold("c", []) is None


def test_pdf_has_chinese_with_the_builtin_cid_font(planner):
    doc = planner.plan(facts(), trigger("RoutedToUnit", unit_id="land-330106", unit_name="x",
                                        explanation="")).documents[0]
    pdf = html_to_pdf(doc.html, doc.title)
    assert pdf.startswith(b"%PDF") and b"STSong-Light" in pdf and b"UniGB-UCS2-H" in pdf
    assert len(pdf) > 1500


def test_chinese_dates():
    assert cn_date("2026-10-13") == "2026年10月13日"
    assert cn_date("2026-09-28T17:00:00+00:00") == "2026年9月29日"  # China's calendar day
    assert cn_date("") == ""
