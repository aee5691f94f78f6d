"""A petition's submission digest keeps the form it was first stored in: a retry is told
from a different petition by comparing a new digest with the one stored with the case."""
from __future__ import annotations

from datetime import UTC, datetime

from petitions.domain.values import Category, Channel, Contact, Petitioner
from services.intake.registration import RegisterPetition


def _petition(**changes: object) -> RegisterPetition:
    fields: dict[str, object] = dict(
        channel=Channel.LETTER, category=Category.APPEAL, division="330106", subject="land",
        content="村里重新分配宅基地时漏掉了我家。", requests=["重新丈量并登记"], people_count=2,
        petitioner=Petitioner(name="张三", id_number="330106199001011234",
                              phone="13800000000", address="杭州市西湖区某村"),
        received_at=datetime(2026, 3, 2, 1, 0, tzinfo=UTC), accused_unit="某街道",
        representatives=(Contact(name="李四", phone="13900000000"),))
    fields.update(changes)
    return RegisterPetition(**fields)  # type: ignore[arg-type]


def test_the_digest_of_a_petition_is_the_one_stored_by_earlier_releases() -> None:
    assert _petition().digest() == PINNED


def test_what_was_submitted_changes_the_digest_and_when_it_arrived_does_not() -> None:
    assert _petition(content="另一件事。").digest() != PINNED
    assert _petition(people_count=3).digest() != PINNED
    assert _petition(received_at=datetime(2026, 3, 3, tzinfo=UTC)).digest() == PINNED


# Computed by `json.dumps(body, sort_keys=True, ensure_ascii=False)` before the encoder was
# kept between calls.
PINNED = "da1df5dc51c876aa38a7f5d00a85ae79f84cb2a85fe6e8a28814b7ac32d88aaf"
