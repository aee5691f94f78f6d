"""Settings of the deadlines service (environment variables), and its configuration files."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from petitions.domain.clocks import ClockPolicy
from petitions.domain.directory import Directory
from petitions.infra.settings import REPO_ROOT, DeadlinesSettings


class DeadlinesServiceSettings(DeadlinesSettings):
    tick_interval_s: float = Field(1.0, alias="DEADLINES_TICK_INTERVAL_S", gt=0)
    tick_batch: int = Field(1000, alias="DEADLINES_TICK_BATCH", ge=1, le=20_000)
    tick_workers: int = Field(2, alias="DEADLINES_TICK_WORKERS", ge=1, le=8)
    unit_limits_file: Path = Field(REPO_ROOT / "config" / "unit-limits.json",
                                   alias="DEADLINES_UNIT_LIMITS_FILE")
    calendar_rules_file: Path = Field(REPO_ROOT / "config" / "calendar-rules.json",
                                      alias="DEADLINES_CALENDAR_RULES_FILE")
    directory_file: Path = Field(REPO_ROOT / "config" / "directory.json", alias="DIRECTORY_FILE")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text("utf-8")) if path.exists() else None


def load_policy(unit_limits_file: Path, calendar_rules_file: Path) -> ClockPolicy:
    """Local working-day limits and roll-forward exceptions; a missing file means none."""
    return ClockPolicy.from_config(_read_json(unit_limits_file), _read_json(calendar_rules_file))


def bureau_resolver(directory_file: Path):
    """division code -> the unit id of its petition bureau (from the directory)."""
    data = _read_json(directory_file)
    directory = Directory.from_dict(data) if data else None

    def bureau_of(division: str) -> str:
        if directory is not None and division in directory.jurisdictions:
            return directory.jurisdiction(division).bureau_unit_id
        return f"bureau-{division}"

    return bureau_of
