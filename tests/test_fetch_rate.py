"""The fetch rate a batch consumer decides to linger by: messages of the last second only."""
from __future__ import annotations

from petitions.infra.batching import FetchRate
from tests.test_auth_tokens import Clock


def test_counts_the_messages_of_the_last_window_only() -> None:
    clock = Clock(100.0)
    rate = FetchRate(window_s=1.0, clock=clock)
    assert rate.per_second() == 0
    rate.add(30)
    clock.now += 0.5
    rate.add(10)
    assert rate.per_second() == 40
    clock.now += 0.6  # the first fetch is now older than the window
    assert rate.per_second() == 10
    clock.now += 1.0
    assert rate.per_second() == 0


def test_a_longer_window_averages_over_its_length() -> None:
    clock = Clock(100.0)
    rate = FetchRate(window_s=2.0, clock=clock)
    rate.add(10)
    clock.now += 1.5
    rate.add(10)
    assert rate.per_second() == 10
