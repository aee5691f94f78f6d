"""The hash-chain verifier, without I/O: each kind of tampering is named at its first event."""
from __future__ import annotations

import base64
import hashlib
from uuid import UUID, uuid4

import pytest

from petitions.domain.audit import (
    GENESIS,
    ChainHead,
    MalformedExport,
    chain,
    chain_intact,
    link,
    verify_chain,
    verify_export,
)

CASE = UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
TOPIC = "petitions.domain.case:Case.NoticeDelivered"


def stored(case_id: UUID = CASE, n: int = 5) -> tuple[list[tuple], ChainHead]:
    """n events as the database stores them: (version, topic, state, chain_hash)."""
    events = [(v, TOPIC, f"encrypted-state-{v}".encode()) for v in range(1, n + 1)]
    hashes = chain(case_id, events)
    rows = [(*e, h) for e, h in zip(events, hashes, strict=True)]
    return rows, ChainHead(n, hashes[-1])


def test_the_link_is_the_documented_construction():
    expected = hashlib.sha256(GENESIS + CASE.bytes + (1).to_bytes(8, "big")
                              + "主题".encode() + b"\x00\x01").digest()
    assert link(GENESIS, CASE.bytes, 1, "主题", b"\x00\x01") == expected


def test_an_untouched_chain_verifies():
    rows, head = stored()
    result = verify_chain(CASE, rows, head)
    assert result.ok and result.events == 5 and result.head_version == 5
    assert result.problem is None and result.version is None


def test_a_single_event_case_verifies():
    rows, head = stored(n=1)
    assert verify_chain(CASE, rows, head).ok


def test_the_chain_binds_the_case_id():
    rows, head = stored()
    result = verify_chain(uuid4(), rows, head)
    assert not result.ok and result.problem == "altered" and result.version == 1


@pytest.mark.parametrize("field, value", [(1, "petitions.domain.case:Case.Forged"),
                                          (2, b"encrypted-state-X")])
def test_an_altered_event_is_named(field, value):
    rows, head = stored()
    row = list(rows[2])
    row[field] = value
    rows[2] = tuple(row)
    result = verify_chain(CASE, rows, head)
    assert (result.ok, result.problem, result.version) == (False, "altered", 3)


def test_an_altered_event_with_a_recomputed_own_hash_is_caught_at_the_next_link():
    rows, head = stored()
    forged = b"forged"
    rows[1] = (2, TOPIC, forged, link(rows[0][3], CASE.bytes, 2, TOPIC, forged))
    result = verify_chain(CASE, rows, head)
    assert (result.problem, result.version) == ("altered", 3)


def test_a_removed_middle_event_is_named():
    rows, head = stored()
    del rows[1]
    result = verify_chain(CASE, rows, head)
    assert (result.ok, result.problem, result.version) == (False, "removed", 2)
    assert "version 2 missing" in result.detail


def test_a_removed_first_event_is_named():
    rows, head = stored()
    del rows[0]
    assert (verify_chain(CASE, rows, head).problem, verify_chain(CASE, rows, head).version) \
        == ("removed", 1)


def test_swapped_versions_are_named_at_the_first_of_them():
    rows, head = stored()
    # The rows keep their hashes; only their versions are exchanged (UPDATE ... SET version).
    third, fourth = rows[2], rows[3]
    rows[2] = (3, fourth[1], fourth[2], fourth[3])
    rows[3] = (4, third[1], third[2], third[3])
    result = verify_chain(CASE, rows, head)
    assert (result.ok, result.problem, result.version) == (False, "reordered", 3)
    assert "now stored at version 4" in result.detail


def test_swapped_contents_are_reordering_too():
    rows, head = stored()
    second, fifth = rows[1], rows[4]
    rows[1] = (2, fifth[1], fifth[2], second[3])
    rows[4] = (5, second[1], second[2], fifth[3])
    result = verify_chain(CASE, rows, head)
    assert (result.problem, result.version) == ("reordered", 2)


def test_rows_out_of_version_order_are_reordered():
    rows, head = stored()
    rows[1], rows[2] = rows[2], rows[1]
    result = verify_chain(CASE, rows, head)
    assert (result.problem, result.version) == ("reordered", 2)


def test_a_truncated_tail_is_caught_by_the_head():
    rows, head = stored()
    result = verify_chain(CASE, rows[:3], head)
    assert (result.ok, result.problem, result.version) == (False, "removed", 4)
    assert "versions 4..5 missing" in result.detail


def test_a_replaced_tail_is_caught_by_the_head():
    rows, head = stored()
    # The newest event removed and another appended in its place: the chain is intact, but
    # the head still records the original.
    replacement = b"another-state"
    rows[4] = (5, TOPIC, replacement, link(rows[3][3], CASE.bytes, 5, TOPIC, replacement))
    result = verify_chain(CASE, rows, head)
    assert (result.problem, result.version) == ("head_mismatch", 5)


def test_a_missing_head_or_all_events_removed():
    rows, head = stored()
    assert verify_chain(CASE, rows, None).problem == "head_mismatch"
    gone = verify_chain(CASE, [], head)
    assert (gone.problem, gone.version) == ("removed", 1)


def test_an_event_without_a_hash_is_altered():
    rows, head = stored()
    rows[3] = (*rows[3][:3], None)
    assert (verify_chain(CASE, rows, head).problem, verify_chain(CASE, rows, head).version) \
        == ("altered", 4)


def test_the_first_problem_is_the_one_reported():
    rows, head = stored()
    rows[1] = (2, TOPIC, b"x", rows[1][3])
    del rows[3]
    assert verify_chain(CASE, rows, head).version == 2


def export_of(rows, head) -> dict:
    return {"case_id": str(CASE),
            "head": {"version": head.version, "chain_hash": head.chain_hash.hex()},
            "stored_events": [{"version": v, "topic": t,
                               "state": base64.b64encode(s).decode(), "chain_hash": h.hex()}
                              for v, t, s, h in rows]}


def test_an_export_verifies_offline_and_a_tampered_one_does_not():
    rows, head = stored()
    doc = export_of(rows, head)
    assert verify_export(doc).ok
    doc["stored_events"][1]["state"] = base64.b64encode(b"tampered").decode()
    result = verify_export(doc)
    assert (result.ok, result.problem, result.version) == (False, "altered", 2)
    truncated = export_of(rows[:4], head)
    assert verify_export(truncated).problem == "removed"


def test_a_document_that_is_no_export_is_refused():
    with pytest.raises(MalformedExport):
        verify_export({"case_id": "nope", "stored_events": []})
    with pytest.raises(MalformedExport):
        verify_export({"case_id": str(CASE), "stored_events": [{"version": 1}]})


def variants():
    """An intact chain and each kind of damage, for comparing the fast and the full check."""
    rows, head = stored()
    yield rows, head
    yield rows, None
    yield rows[:4], head
    yield rows[1:], head
    yield [], head
    yield [rows[0], rows[2], rows[1], *rows[3:]], head
    yield [*rows[:2], (3, TOPIC, b"x", rows[2][3]), *rows[3:]], head
    yield [*rows[:2], (*rows[2][:3], None), *rows[3:]], head
    yield rows, ChainHead(5, bytes(32))
    yield rows, ChainHead(6, head.chain_hash)


@pytest.mark.parametrize("rows, head", list(variants()))
def test_the_fast_check_agrees_with_the_verifier(rows, head):
    full = verify_chain(CASE, rows, head)
    fast = chain_intact(CASE, rows, head and head.version, head and head.chain_hash)
    assert fast == full.ok
    # Database records carry a fifth column (the case id) the fast check ignores.
    assert chain_intact(CASE, [(*r, CASE) for r in rows], head and head.version,
                        head and head.chain_hash) == full.ok
