"""The province's routing configuration as an event-sourced aggregate: every change to the
rule table or the jurisdiction directory is an event, and every routing decision names the
rule-set version it used. Pure."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from petitions.domain.directory import Directory
from petitions.domain.routing import Router, RuleSet
from petitions.domain.values import Actor

# One configuration per deployment (a province), at a well-known id.
ROUTING_CONFIGURATION_ID = uuid5(UUID("0f4a6c1e-55a3-4b0e-9a43-3c6a0a4b8d21"), "routing")


class RoutingConfiguration(Aggregate):
    class Created(Aggregate.Created):
        class_version = 1
        actor: dict[str, str]
        reason: str

        def apply(self, config: RoutingConfiguration) -> None:
            config.rules = None
            config.directory = None
            config.rule_set_version = 0
            config.recusals = {}

    class RuleSetPublished(Aggregate.Event):
        """A new version of the routing rule table took effect."""

        class_version = 1
        rule_set_version: int
        rules: list[dict[str, Any]]
        actor: dict[str, str]
        reason: str

        def apply(self, config: RoutingConfiguration) -> None:
            config.rules = self.rules
            config.rule_set_version = self.rule_set_version

    class DirectoryPublished(Aggregate.Event):
        """A new version of the jurisdiction tree and its units took effect."""

        class_version = 1
        directory: dict[str, Any]
        actor: dict[str, str]
        reason: str

        def apply(self, config: RoutingConfiguration) -> None:
            config.directory = self.directory

    class RecusalDeclared(Aggregate.Event):
        """A unit declared a conflict of interest with a petitioner (by keyed hash of the ID
        number) or with an accused unit; routing skips it for such cases and records the skip."""

        class_version = 1
        unit_id: str
        conflict_with: str
        actor: dict[str, str]
        reason: str

        def apply(self, config: RoutingConfiguration) -> None:
            config.recusals.setdefault(self.unit_id, [])
            if self.conflict_with not in config.recusals[self.unit_id]:
                config.recusals[self.unit_id].append(self.conflict_with)

    def __init__(self) -> None:
        """State is set by `Created.apply`."""

    def declare_recusal(self, *, unit_id: str, conflict_with: str, actor: Actor, at: datetime,
                        reason: str) -> None:
        if self.directory is None or unit_id not in Directory.from_dict(self.directory):
            raise ValueError(f"unknown unit {unit_id}")
        if not conflict_with:
            raise ValueError("a recusal names whom the unit has a conflict with")
        self.trigger_event(self.RecusalDeclared, timestamp=at, unit_id=unit_id,
                           conflict_with=conflict_with, actor=actor.as_dict(), reason=reason)

    @classmethod
    def start(cls, *, actor: Actor, at: datetime) -> RoutingConfiguration:
        return cls._create(cls.Created, id=ROUTING_CONFIGURATION_ID, timestamp=at,
                           actor=actor.as_dict(), reason="routing configuration created")

    def publish_directory(self, directory: dict[str, Any], *, actor: Actor, at: datetime,
                          reason: str) -> None:
        parsed = Directory.from_dict(directory)  # refuses an invalid tree (ValueError)
        if self.rules is not None:
            self._router(self.rules, parsed, self.rule_set_version)  # rules must still resolve
        self.trigger_event(self.DirectoryPublished, timestamp=at, directory=directory,
                           actor=actor.as_dict(), reason=reason)

    def publish_rules(self, rules: list[dict[str, Any]], *, actor: Actor, at: datetime,
                      reason: str) -> None:
        if self.directory is None:
            raise ValueError("publish the directory before the rules")
        version = self.rule_set_version + 1
        self._router(rules, Directory.from_dict(self.directory), version)
        self.trigger_event(self.RuleSetPublished, timestamp=at, rule_set_version=version,
                           rules=rules, actor=actor.as_dict(), reason=reason)

    def router(self) -> Router:
        if self.rules is None or self.directory is None:
            raise ValueError("no rules published yet")
        return self._router(self.rules, Directory.from_dict(self.directory),
                            self.rule_set_version)

    def _router(self, rules: list[dict[str, Any]], directory: Directory, version: int) -> Router:
        recusals = {u: frozenset(keys) for u, keys in self.recusals.items()}
        return Router(RuleSet.from_dict({"version": str(version), "rules": rules}), directory,
                      recusals)
