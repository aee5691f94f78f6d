"""The deadlines service's loaded configuration: the remembered holiday runs and the rules
table built once answer exactly as the plain calendar and policy do. No I/O."""
from __future__ import annotations

from datetime import date, timedelta

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.domain.clocks import ClockPolicy, UnitLimit
from services.deadlines.calendars import CalendarBook, MemoCalendar


def test_remembered_holiday_runs_match_the_calendar_and_cannot_be_altered():
    plain = calendar_from_chinese_calendar()
    memo = MemoCalendar.of(plain)
    start = date(2026, 1, 1)
    for offset in range(0, 365, 7):
        a, b = start + timedelta(days=offset), start + timedelta(days=offset + 15)
        assert memo.rest_runs_between(a, b) == plain.rest_runs_between(a, b)
    runs = memo.rest_runs_between(date(2026, 9, 28), date(2026, 10, 13))
    assert runs == [(date(2026, 10, 1), date(2026, 10, 7))]
    runs.clear()  # a caller changing its copy changes nothing remembered
    assert memo.rest_runs_between(date(2026, 9, 28), date(2026, 10, 13)) == [
        (date(2026, 10, 1), date(2026, 10, 7))]


def test_the_book_serves_a_remembering_calendar_that_still_loads_years():
    book = CalendarBook()
    assert isinstance(book.current(), MemoCalendar)
    later = book.current().with_year(2027, [date(2027, 1, 1)], [])
    assert later.rest_runs_between(date(2026, 12, 30), date(2027, 1, 5)) == [
        (date(2027, 1, 1), date(2027, 1, 1))]


def test_the_rules_table_is_built_once_and_equals_the_policy(tmp_path):
    import json

    from services.deadlines.settings import LoadedPolicy, load_policy

    limits = tmp_path / "limits.json"
    limits.write_text(json.dumps({"limits": [{
        "division": "330106", "clock": "unit_reply", "working_days": 5,
        "trigger": "RoutedToUnit"}]}))
    policy = load_policy(limits, tmp_path / "missing.json")
    assert isinstance(policy, LoadedPolicy)
    plain = ClockPolicy(unit_limits=(UnitLimit.from_dict({
        "division": "330106", "clock": "unit_reply", "working_days": 5,
        "trigger": "RoutedToUnit"}),))
    assert policy.rules() == plain.rules()
    assert policy.rules() is policy.rules()
    assert policy.trigger_types() == plain.trigger_types()
