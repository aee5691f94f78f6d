"""A service settles the garbage collector once built: start-up objects out of its sight,
young collections less often."""
from __future__ import annotations

import gc

from petitions.infra.collector import OLDER_THRESHOLDS, YOUNG_THRESHOLD, settle_after_start_up


def test_start_up_objects_are_frozen_and_collections_spaced():
    before = gc.get_threshold()
    built_at_start_up = [{"route": n} for n in range(1000)]
    try:
        settle_after_start_up()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
        assert gc.get_freeze_count() >= len(built_at_start_up)
        # what is built afterwards is still collected, cycles included
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
