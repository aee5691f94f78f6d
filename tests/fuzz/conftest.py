"""The four services as processes on their own database, stream and subject prefix, for the
bad-input tests that need a running system (schemathesis, raw gRPC)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from petitions.devstack import DATA_DIR, SERVICES
from tests.conftest import TestEnv, isolated_env
from tests.faults.harness import Cluster, WebhookReceiver


@dataclass
class FuzzSystem:
    cluster: Cluster
    env: TestEnv
    receiver: WebhookReceiver

    @property
    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{self.cluster.instances[name].port}" for name in SERVICES}

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.cluster.grpc_port}"

    def alive(self, name: str) -> bool:
        return self.cluster.instances[name].alive


@pytest.fixture(scope="package")
def fuzz_system(servers) -> Iterator[FuzzSystem]:
    with isolated_env(servers, "fuzz") as env, WebhookReceiver() as receiver:
        cluster = Cluster("fuzz", env, receiver, log_root=DATA_DIR / "test-logs")
        cluster.start_all()
        try:
            asyncio.run(cluster.wait_ready())
            yield FuzzSystem(cluster, env, receiver)
        finally:
            codes = cluster.stop_all()
        assert codes == {name: 0 for name in SERVICES}, (
            f"unclean shutdown after fuzzing: {codes}; logs: {cluster.log_dir}")
