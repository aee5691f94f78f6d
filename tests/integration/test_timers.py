"""Deadline timers on real PostgreSQL: each fires exactly once in the case's history, with
concurrent and cancelled tickers, across restarts; clock changes move or cancel them; loading
a year's calendar recomputes provisional deadlines; the listing and calendar API.

Time is a FakeClock: tests move it, never sleep through days."""
from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import date, datetime
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from petitions.domain.calendar import calendar_from_chinese_calendar
from petitions.domain.case import Case
from petitions.domain.clocks import ClockPolicy, UnitLimit
from petitions.domain.values import CHINA_TZ, Actor, Category, Channel, Petitioner
from petitions.infra.auth import TokenAuthority
from petitions.infra.dsn import as_uri
from petitions.infra.http import build_app
from petitions.infra.settings import CommonAuthSettings
from petitions.infra.store import CaseStore
from services.deadlines import timers
from services.deadlines.api import mount_routes
from services.deadlines.calendars import CalendarBook, CalendarYear
from services.deadlines.engine import ClockEngine
from services.deadlines.handler import DeadlinesHandler
from services.deadlines.ticker import Ticker
from tests.conftest import bearer

pytestmark = pytest.mark.integration

CLERK = Actor(id="clerk-1", role="intake_clerk", jurisdiction="330106")
BUREAU = Actor(id="supervisor-1", role="bureau_supervisor", jurisdiction="330106")
UNIT = Actor(id="officer-land", role="handling_unit", jurisdiction="330106")
LEAD = "land-330106"
# A hypothetical 2027 notice: test data only, NOT the State Council's (not yet published).
TEST_2027 = CalendarYear(2027, tuple(date(2027, 1, d) for d in (1, 11, 12, 13)),
                         (date(2027, 1, 16),), "test data, not an official notice")


def cst(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CHINA_TZ)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def set(self, text: str) -> None:
        self.at = cst(text)


class Deadlines:
    """The deadlines service's parts, wired on the test database (no bus, no HTTP server)."""

    def __init__(self, store: CaseStore, pool: asyncpg.Pool, clock: FakeClock,
                 book: CalendarBook | None = None, policy: ClockPolicy = ClockPolicy(),
                 batch: int = 100) -> None:
        self.store, self.pool, self.clock = store, pool, clock
        self.book = book or CalendarBook(calendar_from_chinese_calendar())
        self.engine = ClockEngine(store, self.book.current, clock.now, policy)
        self.handler = DeadlinesHandler(self.engine, pool)
        self.ticker = Ticker(self.engine, pool, clock.now, batch=batch)

    async def process(self, *cases: Case) -> None:
        for c in cases:
            await self.handler.process(c.id)


@pytest.fixture
async def clean(pool):
    await pool.execute("DELETE FROM deadline_timers")
    await pool.execute("DELETE FROM calendar_years")
    yield
    await pool.execute("DELETE FROM calendar_years")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(cst("2026-09-28T10:00:00"))


@pytest.fixture
def svc(store, pool, clock, clean) -> Deadlines:
    return Deadlines(store, pool, clock)


def petition(received: str = "2026-09-28T09:00:00", division: str = "330106") -> Case:
    at = cst(received)
    return Case.register(
        case_id=uuid4(), case_number=f"{division}-2026-{uuid4().int % 10**6:06d}",
        channel=Channel.LETTER, category=Category.APPEAL, division=division, subject="land",
        content="宅基地纠纷", requests=["重新丈量"], people_count=1,
        petitioner=Petitioner(name="张三"), received_at=at, submission_digest="d", actor=CLERK,
        at=at)


async def registered(store: CaseStore, n: int = 1, **kw) -> list[Case]:
    cases = [petition(**kw) for _ in range(n)]
    await asyncio.to_thread(store.save, *cases)
    return cases


async def act(store: CaseStore, case_id: UUID, command) -> None:
    await asyncio.to_thread(store.update, case_id, command)


def history_types(store: CaseStore, case_id: UUID) -> list[str]:
    return [type(e).__name__ for e in store.history(case_id)]


async def timer_states(pool, case_id: UUID) -> dict[tuple[str, str], tuple[str, date]]:
    rows = await pool.fetch("SELECT clock, kind, state, due_on FROM deadline_timers "
                            "WHERE case_id = $1", case_id)
    return {(r["clock"], r["kind"]): (r["state"], r["due_on"]) for r in rows}


# --- firing exactly once ---------------------------------------------------------------------


class StuckEngine(ClockEngine):
    """Appends the events, then waits before the tick may mark its rows, so a cancellation
    lands exactly between the append and the mark."""

    appended = threading.Event()
    release = threading.Event()

    def fire_batch(self, rows, stored, now):
        outcome = super().fire_batch(rows, stored, now)
        self.appended.set()
        self.release.wait(30)
        return outcome


async def test_concurrent_and_cancelled_tickers_fire_each_timer_exactly_once(
        store, test_env, svc, clock):
    cases = await registered(store, 30)
    await svc.process(*cases)
    for c in cases:
        assert history_types(store, c.id) == ["Registered", "ClockStarted"]

    dsn = as_uri(test_env.postgres_dsn)
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=2) for _ in range(3)]
    try:
        def ticker(pool, engine_cls=ClockEngine, batch=4, workers=2):
            engine = engine_cls(store, svc.book.current, clock.now)
            return Ticker(engine, pool, clock.now, batch=batch, workers=workers)

        for moment in ("2026-10-10T00:00:01", "2026-10-14T00:00:01"):  # reminders, then misses
            clock.set(moment)
            StuckEngine.appended.clear()
            StuckEngine.release.clear()
            doomed = asyncio.create_task(ticker(pools[2], StuckEngine, batch=10,
                                                workers=1).tick())
            await asyncio.to_thread(StuckEngine.appended.wait, 30)  # its events are appended
            reports = await asyncio.gather(ticker(pools[0]).tick(), ticker(pools[1]).tick())
            assert sum(r.claimed for r in reports) == 20  # the doomed ticker's rows are locked
            assert all(r.claimed > 0 for r in reports)  # both tickers did part of the work
            doomed.cancel()  # mid-tick: after the append, before the mark
            with pytest.raises(asyncio.CancelledError):
                await doomed
            StuckEngine.release.set()
            await asyncio.sleep(0.2)
            leftover = await ticker(pools[0], batch=50).tick()  # re-claims the doomed rows
            assert (leftover.claimed, leftover.events) == (10, 0)
            assert await pools[0].fetchval(
                "SELECT count(*) FROM deadline_timers WHERE state = 'pending' AND fire_at <= $1",
                clock.now()) == 0
    finally:
        StuckEngine.release.set()
        for p in pools:
            await p.close()

    for c in cases:
        counts = Counter(history_types(store, c.id))
        assert counts["ClockWarned"] == 1, counts
        assert counts["ClockMissed"] == 1, counts
        assert counts["EscalationProposed"] == 1, counts
        fresh = store.get(c.id)
        assert fresh.overdue and fresh.clocks["acceptance"]["state"] == "overdue"


async def test_reminder_three_days_before_missed_the_day_after_escalation_after_two(
        store, pool, svc, clock):
    [case] = await registered(store)
    await svc.process(case)
    clock.set("2026-10-09T23:59:59")
    assert (await svc.ticker.tick()).claimed == 0  # nothing due yet
    clock.set("2026-10-10T00:00:00")  # 3 days before 13 October
    assert (await svc.ticker.tick()).events == 1
    assert history_types(store, case.id)[-1] == "ClockWarned"
    clock.set("2026-10-13T23:59:59")  # the due day itself is still in time
    assert (await svc.ticker.tick()).claimed == 0
    clock.set("2026-10-14T00:00:00")
    report = await svc.ticker.tick()
    assert report.events == 2
    assert history_types(store, case.id)[-2:] == ["ClockMissed", "EscalationProposed"]
    assert await timer_states(pool, case.id) == {
        ("acceptance", "warn"): ("fired", date(2026, 10, 13)),
        ("acceptance", "due"): ("fired", date(2026, 10, 13))}
    clock.set("2026-11-01T00:00:00")
    assert (await svc.ticker.tick()).claimed == 0  # fired timers never fire again


async def test_timers_survive_a_restart(store, pool, test_env, svc, clock):
    cases = await registered(store, 5)
    await svc.process(*cases)
    del svc  # the service stops; a new process starts on the same database
    new_pool = await asyncpg.create_pool(as_uri(test_env.postgres_dsn), min_size=1, max_size=2)
    new_store = CaseStore(test_env.postgres_dsn, pool_size=2,
                          cipher_key=CommonAuthSettings().payload_encryption_key)
    try:
        restarted = Deadlines(new_store, new_pool, FakeClock(cst("2026-10-10T08:00:00")))
        report = await restarted.ticker.tick()
        assert (report.claimed, report.events) == (5, 5)
        assert all(history_types(store, c.id)[-1] == "ClockWarned" for c in cases)
    finally:
        await new_pool.close()
        new_store.close()


# --- clock changes move and cancel timers ------------------------------------------------------


def accept(decided_on: date, mode: str = "assign"):
    def command(c: Case) -> None:
        c.accept(mode=mode, lead_unit=LEAD, assisting_units=[], decided_on=decided_on,
                 actor=BUREAU, at=cst("2026-10-09T10:00:00"), reason="within remit")
    return command


async def test_an_extension_before_the_timer_fires_moves_it(store, pool, svc, clock):
    [case] = await registered(store)
    await svc.process(case)
    await act(store, case.id, accept(date(2026, 10, 9), mode="transfer"))
    await svc.process(case)
    states = await timer_states(pool, case.id)
    assert states[("handling", "due")] == ("pending", date(2026, 12, 8))
    assert states[("acceptance", "due")][0] == "cancelled"

    clock.set("2026-12-01T10:00:00")
    await act(store, case.id, lambda c: c.grant_extension(
        days=30, approver="局长", petitioner_told=True, actor=BUREAU, at=clock.now(),
        reason="needs a survey"))
    await svc.process(case)
    states = await timer_states(pool, case.id)
    assert states[("handling", "due")] == ("pending", date(2027, 1, 7))
    assert states[("handling", "warn")] == ("pending", date(2027, 1, 7))
    clock.set("2026-12-09T08:00:00")  # the original due date has passed
    assert (await svc.ticker.tick()).events == 0
    assert "ClockMissed" not in history_types(store, case.id)
    fresh = store.get(case.id)
    assert fresh.clocks["handling"]["due_on"] == "2027-01-07"
    assert fresh.clocks["handling"]["provisional"] is True


async def test_withdrawing_cancels_every_timer(store, pool, svc, clock):
    [case] = await registered(store)
    await svc.process(case)
    await act(store, case.id, lambda c: c.withdraw(voluntary=True, actor=CLERK,
                                                   at=cst("2026-10-01T10:00:00"),
                                                   reason="resolved"))
    await svc.process(case)
    assert {s for s, _ in (await timer_states(pool, case.id)).values()} == {"cancelled"}
    clock.set("2026-10-20T00:00:00")
    assert (await svc.ticker.tick()).claimed == 0
    assert history_types(store, case.id)[-1] == "ClockStopped"
    assert store.get(case.id).clocks["acceptance"]["outcome"] == "closed"


async def test_older_timer_upserts_are_ignored(store, pool, svc):
    [case] = await registered(store)
    await svc.process(case)
    first = await asyncio.to_thread(svc.engine.reconcile_case, case.id)
    await act(store, case.id, lambda c: c.withdraw(voluntary=True, actor=CLERK,
                                                   at=cst("2026-10-01T10:00:00"), reason="x"))
    await svc.process(case)  # generation 4: cancelled
    await timers.upsert(pool, [first.timers])  # a late worker with generation 2
    assert {s for s, _ in (await timer_states(pool, case.id)).values()} == {"cancelled"}


async def test_a_stale_timer_is_recomputed_by_the_tick(store, pool, svc, clock):
    [case] = await registered(store)
    await svc.process(case)
    # Someone changed the clock but crashed before storing the timers.
    await pool.execute("UPDATE deadline_timers SET due_on = '2026-10-05', "
                       "fire_at = '2026-10-02T00:00:00+08' WHERE case_id = $1", case.id)
    clock.set("2026-10-03T00:00:00")
    assert await tick_until_none_due(svc, pool, case.id) == 0
    states = await timer_states(pool, case.id)
    assert states[("acceptance", "warn")] == ("pending", date(2026, 10, 13))


async def tick_until_none_due(svc: Deadlines, pool: asyncpg.Pool, case_id: UUID) -> int:
    """Tick until none of the case's timers is due; the events appended. The tick's two
    workers may split a stale case's rows between them, and then both leave the case to the
    next tick (see the test below)."""
    events = 0
    for _ in range(10):
        events += (await svc.ticker.tick()).events
        if not await pool.fetchval("SELECT count(*) FROM deadline_timers WHERE case_id = $1 "
                                   "AND state = 'pending' AND fire_at <= $2",
                                   case_id, svc.clock.now()):
            return events
    raise AssertionError("timers still due after 10 ticks")


async def test_two_tickers_holding_stale_timers_of_one_case_neither_wait_for_the_other(
        store, pool, svc, clock):
    [case] = await registered(store)
    await svc.process(case)
    await pool.execute("UPDATE deadline_timers SET due_on = '2026-10-05', "
                       "fire_at = '2026-10-02T00:00:00+08' WHERE case_id = $1", case.id)
    clock.set("2026-10-03T00:00:00")
    now = clock.now()
    async with pool.acquire() as first, pool.acquire() as second:
        async with first.transaction(), second.transaction():
            # each ticker has claimed one of the case's stale rows (SKIP LOCKED split them)
            mine, theirs = (await timers.claim_due(first, now, 1),
                            await timers.claim_due(second, now, 1))
            assert mine[0]["case_id"] == theirs[0]["case_id"] == case.id
            # recomputing the case waits for no one: it is left to a later tick instead
            # (waiting, each would hold the row the other needs: a deadlock)
            events = await asyncio.wait_for(asyncio.gather(
                svc.ticker.work(first, mine, now), svc.ticker.work(second, theirs, now)), 20)
            assert events == [0, 0]
    assert (await timer_states(pool, case.id))[("acceptance", "warn")][1] == date(2026, 10, 5)
    # a later tick claims them together and recomputes the case
    assert await tick_until_none_due(svc, pool, case.id) == 0
    states = await timer_states(pool, case.id)
    assert states[("acceptance", "warn")] == ("pending", date(2026, 10, 13))


# --- calendars ----------------------------------------------------------------------------------


async def test_loading_2027_recomputes_provisional_deadlines(store, pool, svc, clock):
    [case] = await registered(store, received="2026-12-28T09:00:00")
    [settled] = await registered(store)  # due in 2026: not provisional, never recomputed
    clock.set("2026-12-28T10:00:00")
    await svc.process(case, settled)
    assert store.get(case.id).clocks["acceptance"]["due_on"] == "2027-01-12"
    assert store.get(case.id).clocks["acceptance"]["provisional"] is True

    await svc.book.store(pool, TEST_2027, "province-admin")
    counts = await svc.handler.recompute_provisional()
    assert counts == {"cases": 1, "recomputed": 1, "moved": 0}
    fresh = store.get(case.id)
    assert (fresh.clocks["acceptance"]["due_on"], fresh.clocks["acceptance"]["provisional"]) == (
        "2027-01-14", False)
    assert history_types(store, case.id)[-1] == "ClockRecomputed"
    assert (await timer_states(pool, case.id))[("acceptance", "due")] == (
        "pending", date(2027, 1, 14))
    assert await svc.handler.recompute_provisional() == {"cases": 0, "recomputed": 0, "moved": 0}

    # A replica started later loads chinese-calendar's years plus the stored 2027.
    other = CalendarBook(calendar_from_chinese_calendar())
    assert await other.refresh(pool) is True
    assert other.current().knows(2027) and other.current().is_rest_day(date(2027, 1, 12))
    assert await other.refresh(pool) is False


async def test_the_calendar_cli_loads_a_year(store, pool, svc, test_env, tmp_path, monkeypatch):
    from services.deadlines import calendar_cli

    [case] = await registered(store, received="2026-12-28T09:00:00")
    await svc.process(case)
    path = tmp_path / "2027.json"
    path.write_text('{"year": 2027, "holidays": ["2027-01-01", "2027-01-11", "2027-01-12", '
                    '"2027-01-13"], "swapped_workdays": ["2027-01-16"], "source": "test"}')
    monkeypatch.setenv("POSTGRES_DSN", test_env.postgres_dsn)
    result = await calendar_cli.load(path, "cli-test")
    assert result["loaded"] == [2027] and result["recomputed"]["recomputed"] == 1
    assert store.get(case.id).clocks["acceptance"]["due_on"] == "2027-01-14"
    bad = tmp_path / "bad.json"
    bad.write_text('{"year": 2027, "holidays": ["2028-01-01"]}')
    with pytest.raises(ValueError):
        await calendar_cli.load(bad, "cli-test")


# --- the API ------------------------------------------------------------------------------------


@pytest.fixture
async def api(svc, pool, clock):
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    app = build_app("deadlines", "test", ready, TokenAuthority(CommonAuthSettings().auth_signing_key))
    mount_routes(app, pool, svc.book, svc.handler, clock.now)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://deadlines") as client:
        yield client


async def test_listing_is_scoped_and_filtered(store, svc, clock, api, tokens):
    [west] = await registered(store)
    [binjiang] = await registered(store, division="330108")
    [later] = await registered(store, received="2026-10-05T09:00:00")
    await svc.process(west, binjiang, later)

    clock.set("2026-10-11T10:00:00")
    r = await api.get("/v1/deadlines", headers=bearer(tokens["county_330106_clerk"]))
    assert r.status_code == 200
    items = r.json()["items"]
    assert {i["case_id"] for i in items} == {str(west.id), str(later.id)}
    assert items[0] == {"case_id": str(west.id), "clock": "acceptance", "due_on": "2026-10-13",
                        "state": "due_soon", "division": "330106", "unit_id": "bureau-330106",
                        "obligation": "duty", "provisional": False}
    soon = await api.get("/v1/deadlines", params={"state": "due_soon"},
                         headers=bearer(tokens["county_330106_clerk"]))
    assert [i["case_id"] for i in soon.json()["items"]] == [str(west.id)]
    # a county cannot look into another county; the city sees both
    other = await api.get("/v1/deadlines", params={"division": "330108"},
                          headers=bearer(tokens["county_330106_clerk"]))
    assert other.json()["items"] == []
    city = await api.get("/v1/deadlines", headers=bearer(tokens["city_330100_supervisor"]))
    assert {str(west.id), str(binjiang.id)} <= {i["case_id"] for i in city.json()["items"]}

    clock.set("2026-10-14T08:00:00")
    await svc.ticker.tick()
    overdue = await api.get("/v1/deadlines", params={"state": "overdue", "division": "330106"},
                            headers=bearer(tokens["province_admin"]))
    assert [i["case_id"] for i in overdue.json()["items"]] == [str(west.id)]
    assert overdue.json()["items"][0]["state"] == "overdue"
    # a handling unit sees only its own unit's clocks
    unit = await api.get("/v1/deadlines", headers=bearer(tokens["unit_land_330106"]))
    assert unit.json()["items"] == []
    assert (await api.get("/v1/deadlines")).status_code == 401
    assert (await api.get("/v1/deadlines", params={"state": "late"},
                          headers=bearer(tokens["province_admin"]))).status_code == 422


async def test_calendar_api_needs_an_administrator_and_recomputes(store, svc, clock, api,
                                                                  tokens):
    [case] = await registered(store, received="2026-12-28T09:00:00")
    await svc.process(case)
    body = {"holidays": [d.isoformat() for d in TEST_2027.holidays],
            "swapped_workdays": ["2027-01-16"], "source": TEST_2027.source}
    denied = await api.put("/v1/calendars/2027", json=body,
                           headers=bearer(tokens["county_330106_supervisor"]))
    assert denied.status_code == 403
    bad = await api.put("/v1/calendars/2027", json={**body, "swapped_workdays": ["2027-01-18"]},
                        headers=bearer(tokens["province_admin"]))
    assert bad.status_code == 422  # a Monday cannot be a swapped working day
    assert (await api.get("/v1/calendars/2027",
                          headers=bearer(tokens["province_admin"]))).status_code == 404
    r = await api.put("/v1/calendars/2027", json=body, headers=bearer(tokens["province_admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["recomputed"]["recomputed"] == 1
    got = await api.get("/v1/calendars/2027", headers=bearer(tokens["county_330106_clerk"]))
    assert got.json()["swapped_workdays"] == ["2027-01-16"]
    assert store.get(case.id).clocks["acceptance"]["due_on"] == "2027-01-14"


# --- the whole lifecycle, through the Case's own commands --------------------------------------


async def test_lifecycle_driven_transitions(store, pool, clock, clean):
    """Accepted → objection window, local limit, handling → reply → review window and return
    visit → review with a hearing → re-review window, through the Case's own commands."""
    limit = UnitLimit(division="330106", clock="local_simple_reply", working_days=5,
                      trigger="Accepted", unit_id=LEAD)
    svc = Deadlines(store, pool, clock, policy=ClockPolicy(unit_limits=(limit,)))
    cal = svc.book.current()
    [case] = await registered(store)
    await svc.process(case)

    async def step(when: str, command):
        clock.set(when)
        await act(store, case.id, command)
        await svc.process(case)
        return store.get(case.id)

    c = await step("2026-10-09T10:00:00", accept(date(2026, 10, 9)))
    assert {k: v["state"] for k, v in c.clocks.items()} == {
        "acceptance": "met", "handling": "running", "objection": "running",
        "local_simple_reply": "running"}
    assert c.clocks["local_simple_reply"]["due_on"] == "2026-10-15"  # Sat 10 Oct works
    clock.set("2026-10-16T00:00:00")  # the objection window expired unused
    await svc.ticker.tick()
    c = store.get(case.id)
    assert c.clocks["objection"]["state"] == "closed"  # a window: closed, never missed
    assert c.clocks["local_simple_reply"]["state"] == "overdue" and c.overdue
    c = await step("2026-10-30T10:00:00", lambda c: c.reply(
        outcome="supported", reply_text="重新丈量", replied_on=date(2026, 10, 30), actor=UNIT,
        at=clock.now(), reason="investigated"))
    assert c.clocks["handling"]["state"] == "met"
    assert c.clocks["local_simple_reply"]["state"] == "late" and not c.overdue
    c = await step("2026-11-02T10:00:00", lambda c: c.record_reply_receipt(
        received_on=date(2026, 11, 2), actor=UNIT, at=clock.now(), reason="signed for"))
    assert c.clocks["review_request"]["due_on"] == "2026-12-02"
    assert c.clocks["return_visit"]["due_on"] == "2026-11-12"
    # the return visit was never made and the service was not ticking during the reminder
    # window: missed (one notice, so not yet escalated); a reminder after the due date is moot
    clock.set("2026-11-13T00:00:00")
    await svc.ticker.tick()
    c = store.get(case.id)
    assert c.clocks["return_visit"]["state"] == "overdue" and c.overdue
    types = history_types(store, case.id)
    assert types.count("ClockMissed") == 2 and types.count("EscalationProposed") == 0
    c = await step("2026-11-20T10:00:00", lambda c: c.request_review(
        requested_on=date(2026, 11, 20), organ="city", calendar=cal, actor=CLERK,
        at=clock.now(), reason="dissatisfied"))
    assert c.clocks["review_request"]["state"] == "met"
    assert c.clocks["review_opinion"]["due_on"] == "2026-12-21"
    c = await step("2026-11-25T10:00:00", lambda c: c.hold_hearing(
        held_on=date(2026, 11, 25), duration_days=10, actor=BUREAU, at=clock.now(),
        reason="complex"))
    assert (c.clocks["review_opinion"]["due_on"], c.clocks["review_opinion"]["paused_days"]) == (
        "2026-12-30", 10)
    c = await step("2026-12-10T10:00:00", lambda c: c.issue_review_opinion(
        outcome="upheld", opinion="维持", issued_on=date(2026, 12, 10), actor=BUREAU,
        at=clock.now(), reason="reviewed"))
    assert c.clocks["review_opinion"]["state"] == "met"
    assert c.clocks["re_review_request"]["state"] == "running"
    assert "ClockMoved" in history_types(store, case.id)
    # the case summary shows every clock (the projection's fold)
    from petitions.domain.summary import fold_summary
    from petitions.infra.events import event_data

    s = None
    for e in store.history(case.id):
        s = fold_summary(s, str(case.id), type(e).__name__, e.originator_version,
                         e.timestamp.isoformat(), event_data(e))
    assert s["overdue"] is True
    assert s["deadlines"]["review_opinion"]["state"] == "met"
    assert s["deadlines"]["objection"]["state"] == "closed"
    assert s["deadlines"]["return_visit"]["state"] == "overdue"
    assert s["deadlines"]["handling"]["explanation"].startswith("handle and reply within 60")


def test_timers_table_is_indexed_for_ticks(test_env):
    import psycopg

    with psycopg.connect(test_env.postgres_dsn) as conn:
        indexes = {r[0]: r[1] for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'deadline_timers'")}
    assert "WHERE (state = 'pending'::text)" in indexes["deadline_timers_fire_idx"]
    assert "(fire_at)" in indexes["deadline_timers_fire_idx"]

