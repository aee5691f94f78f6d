"""Bus message bodies: the fast encoder writes what the standard one wrote (no I/O)."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest

from petitions.infra.bus import _encode

WHEN = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
CASE = UUID("6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f")


def standard(body):
    return json.loads(json.dumps(body, ensure_ascii=False, default=str))


@pytest.mark.parametrize("body", [
    {"event_id": f"{CASE}:1", "case_id": str(CASE), "version": 1, "type": "Registered",
     "recorded_at": WHEN.isoformat(), "position": 7,
     "data": {"content": "宅基地纠纷", "requests": ["重新丈量"], "people_count": 1,
              "received_at": WHEN, "case": CASE, "nothing": None, "ratio": 0.5}},
    {"data": {"big": 2 ** 70}},          # past 64 bits: the standard encoder's way
    {"data": {1: "a non-string key"}},   # likewise
])
def test_the_fast_encoder_writes_what_the_standard_one_wrote(body):
    assert json.loads(_encode(body)) == standard(body)


def test_datetimes_keep_their_written_form():
    assert json.loads(_encode({"at": WHEN}))["at"] == "2026-03-02 09:30:00+00:00"
