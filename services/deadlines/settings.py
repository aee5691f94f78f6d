"""Settings of the deadlines service (environment variables), and its configuration files."""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

from pydantic import Field

from petitions.domain.clocks import Action, ClockPolicy
from petitions.domain.directory import Directory
from petitions.infra.settings import REPO_ROOT, DeadlinesSettings


class DeadlinesServiceSettings(DeadlinesSettings):
    tick_interval_s: float = Field(1.0, alias="DEADLINES_TICK_INTERVAL_S", gt=0)
    tick_batch: int = Field(1000, alias="DEADLINES_TICK_BATCH", ge=1, le=20_000)
    tick_workers: int = Field(2, alias="DEADLINES_TICK_WORKERS", ge=1, le=8)
    consumer_linger_s: float = Field(0.05, alias="DEADLINES_CONSUMER_LINGER_S", ge=0, le=5)
    unit_limits_file: Path = Field(REPO_ROOT / "config" / "unit-limits.json",
                                   alias="DEADLINES_UNIT_LIMITS_FILE")
    calendar_rules_file: Path = Field(REPO_ROOT / "config" / "calendar-rules.json",
                                      alias="DEADLINES_CALENDAR_RULES_FILE")
    directory_file: Path = Field(REPO_ROOT / "config" / "directory.json", alias="DIRECTORY_FILE")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text("utf-8")) if path.exists() else None


class LoadedPolicy(ClockPolicy):
    """A policy whose rules table (the statutory table merged with the local limits) is built
    once, not for every case reconciled: the configuration only changes with a restart."""

    @cached_property
    def _rules(self) -> dict[str, tuple[Action, ...]]:
        return super().rules()

    def rules(self) -> dict[str, tuple[Action, ...]]:
        return self._rules


def load_policy(unit_limits_file: Path, calendar_rules_file: Path) -> ClockPolicy:
    """Local working-day limits and roll-forward exceptions; a missing file means none."""
    policy = ClockPolicy.from_config(_read_json(unit_limits_file),
                                     _read_json(calendar_rules_file))
    return LoadedPolicy(policy.unit_limits, policy.no_roll_forward)


def bureau_resolver(directory_file: Path):
    """division code -> the unit id of its petition bureau (from the directory)."""
    data = _read_json(directory_file)
    directory = Directory.from_dict(data) if data else None

    def bureau_of(division: str) -> str:
        if directory is not None and division in directory.jurisdictions:
            return directory.jurisdiction(division).bureau_unit_id
        return f"bureau-{division}"

    return bureau_of
