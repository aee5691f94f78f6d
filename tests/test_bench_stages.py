"""The benchmark reads a registration's stages off intake's metrics text."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench import stages


def _metrics_text(observations: dict[str, list[float]], batches: list[int],
                  screenings: list[int] = ()) -> str:
    registry = CollectorRegistry()
    stage = Histogram(stages.STAGE_FAMILY, "stages", ["stage"], registry=registry)
    batch = Histogram(stages.BATCH_FAMILY, "cases", registry=registry)
    screening = Histogram(stages.SCREENING_FAMILY, "petitions", registry=registry)
    for name, values in observations.items():
        for v in values:
            stage.labels(name).observe(v)
    for n in batches:
        batch.observe(n)
    for n in screenings:
        screening.observe(n)
    return generate_latest(registry).decode()


def test_means_are_taken_over_what_was_observed_between_two_snapshots():
    before = stages.parse(_metrics_text({"screen": [0.010], "queued": [0.5]}, [1], [1]))
    after = stages.parse(_metrics_text(
        {"screen": [0.010, 0.002, 0.004], "queued": [0.5, 0.001, 0.003], "commit": [0.006]},
        [1, 2, 6], [1, 1, 2]))
    assert stages.means(before, after) == {
        "screen_ms": 3.0, "queued_ms": 2.0, "commit_ms": 6.0, "cases_per_commit": 4.0,
        "petitions_per_screening": 1.5}
    assert stages.describe(stages.means(before, after)) == "2.0 / 3.0 / 6.0 (1.5 / 4.0)"


def test_a_run_that_registered_nothing_has_no_means():
    same = stages.parse(_metrics_text({"screen": [0.01]}, [3]))
    assert stages.means(same, same) == {}
    assert stages.describe({}) == "—"
