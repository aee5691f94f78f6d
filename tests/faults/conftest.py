"""Fixtures of the fault suites (see harness.py)."""
from __future__ import annotations

import pytest

from tests.faults.harness import DIVISIONS, assert_webhooks_stay_local


@pytest.fixture(scope="session")
def clerk_tokens(tokens) -> dict[str, str]:
    """Division -> a clerk token of that county, for the load."""
    assert_webhooks_stay_local()
    return {d: tokens[f"county_{d}_clerk"] for d in DIVISIONS}
