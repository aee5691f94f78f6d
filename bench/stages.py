"""A registration's time by stage (queued for its batch, the batch's screening, its commit),
the cases per commit and the petitions per screening statement, read off intake's /metrics
before and after a load run."""
from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

STAGE_FAMILY = "petitions_registration_stage_seconds"
BATCH_FAMILY = "petitions_group_commit_cases"
SCREENING_FAMILY = "petitions_screening_batch_petitions"
BATCH_KEYS = {BATCH_FAMILY: "batch", SCREENING_FAMILY: "screening"}
STAGES = ("queued", "screen", "commit")


def snapshot(port: int) -> dict[str, float]:
    return parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)


def parse(text: str) -> dict[str, float]:
    """The histograms' sums and counts: `screen_sum`, `screen_count`, ..., `batch_sum`,
    `screening_sum`."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != STAGE_FAMILY and family.name not in BATCH_KEYS:
            continue
        for sample in family.samples:
            suffix = sample.name[len(family.name):]
            if suffix in ("_sum", "_count"):
                key = sample.labels["stage"] if family.name == STAGE_FAMILY \
                    else BATCH_KEYS[family.name]
                values[key + suffix] = sample.value
    return values


def means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean milliseconds in each stage, mean cases per commit and mean petitions per screening
    statement, between two snapshots."""
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    out: dict[str, float] = {}
    for stage in STAGES:
        if delta(f"{stage}_count"):
            out[f"{stage}_ms"] = round(1000 * delta(f"{stage}_sum") / delta(f"{stage}_count"), 2)
    if delta("batch_count"):
        out["cases_per_commit"] = round(delta("batch_sum") / delta("batch_count"), 1)
    if delta("screening_count"):
        out["petitions_per_screening"] = round(
            delta("screening_sum") / delta("screening_count"), 1)
    return out


def describe(stages: dict[str, float] | None) -> str:
    if not stages:
        return "—"
    times = " / ".join(f"{stages.get(f'{s}_ms', '—')}" for s in STAGES)
    return (f"{times} ({stages.get('petitions_per_screening', '—')} / "
            f"{stages.get('cases_per_commit', '—')})")
