"""The routing configuration held by this process: loaded from the event store, seeded from
the files on first start, reloaded when another replica publishes a change."""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import IntegrityError

from petitions.domain.directory import Directory
from petitions.domain.routing import Router
from petitions.domain.routing_config import ROUTING_CONFIGURATION_ID, RoutingConfiguration
from petitions.domain.values import Actor
from petitions.infra.store import CaseStore

log = logging.getLogger(__name__)
SEED_ACTOR = Actor(id="routing-service", role="service")


class ConfigurationHolder:
    def __init__(self, store: CaseStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._config: RoutingConfiguration | None = None
        self._router: Router | None = None
        self._directory: Directory | None = None

    def load_or_seed(self, directory_file: Path, rules_file: Path) -> None:
        config = self.store.get(ROUTING_CONFIGURATION_ID)
        if config is None:
            config = RoutingConfiguration.start(actor=SEED_ACTOR, at=self.clock())
            config.publish_directory(json.loads(directory_file.read_text("utf-8")),
                                     actor=SEED_ACTOR, at=self.clock(),
                                     reason=f"seeded from {directory_file.name}")
            config.publish_rules(json.loads(rules_file.read_text("utf-8"))["rules"],
                                 actor=SEED_ACTOR, at=self.clock(),
                                 reason=f"seeded from {rules_file.name}")
            try:
                self.store.save(config)
            except IntegrityError:  # another replica seeded it first
                config = self.store.get(ROUTING_CONFIGURATION_ID)
        self._install(config)

    def reload(self) -> None:
        self._install(self.store.get(ROUTING_CONFIGURATION_ID))

    def _install(self, config: RoutingConfiguration) -> None:
        router = config.router()
        with self._lock:
            self._config, self._router, self._directory = config, router, router.directory
        log.info("routing configuration installed",
                 extra={"rule_set_version": config.rule_set_version})

    def router(self) -> Router:
        assert self._router is not None, "configuration not loaded"
        return self._router

    def directory(self) -> Directory:
        assert self._directory is not None, "configuration not loaded"
        return self._directory

    def snapshot(self) -> RoutingConfiguration:
        assert self._config is not None, "configuration not loaded"
        return self._config

    def change(self, command: Callable[[RoutingConfiguration], None]) -> RoutingConfiguration:
        """Apply an administrator's change with optimistic concurrency, then install it."""
        config = self.store.update(ROUTING_CONFIGURATION_ID, command)
        self._install(config)
        return config

    def rules_view(self) -> dict[str, Any]:
        config = self.snapshot()
        return {"rule_set_version": config.rule_set_version, "rules": config.rules}
