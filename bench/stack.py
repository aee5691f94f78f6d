"""Everything the benchmark starts, and its removal: embedded (or configured) PostgreSQL and
NATS, one fresh database and JetStream stream per phase, the four services as processes, the
baseline app and the webhook receiver. All of it is registered on an ExitStack, so it is
stopped/dropped on success, failure or Ctrl-C alike."""
from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from typing import Any

import httpx
import psycopg

from petitions.devstack import (
    DATA_DIR,
    PORT_VARIABLES,
    REPO_ROOT,
    SERVICES,
    Infrastructure,
    ServiceProcess,
    free_port,
    infrastructure,
    service_env,
    start_service,
    stop_process,
    wait_for_port,
    wait_until_ready,
)
from petitions.infra.dsn import as_uri
from petitions.infra.schema import migrate

LOG_DIR = DATA_DIR / "bench-logs"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stack:
    def __init__(self, exits: ExitStack) -> None:
        self.exits = exits
        self.run_id = uuid.uuid4().hex[:8]
        self.data_dir = DATA_DIR / f"bench-{self.run_id}"
        exits.callback(shutil.rmtree, self.data_dir, True)
        self.infra: Infrastructure = exits.enter_context(infrastructure(self.data_dir))
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.streams: dict[str, str] = {}
        self._databases: dict[str, str] = {}  # name -> dsn, of databases not dropped yet

    # ------------------------------------------------------------------ databases, streams

    def database(self, purpose: str) -> str:
        """A fresh, migrated database, dropped (WITH FORCE) when the run ends."""
        name = f"petitions_bench_{self.run_id}_{purpose}"
        with psycopg.connect(self.infra.postgres_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.exits.callback(self._drop_database, name)
        dsn = as_uri(self.infra.postgres_dsn, name)
        self._databases[name] = dsn
        migrate(dsn)
        return dsn

    def quiesce(self, keep: tuple[str | None, ...] = (), timeout: float = 60.0) -> float:
        """Between phases: drop the databases of the phases done (except those in `keep`, a
        later phase's), let autovacuum finish and checkpoint, so that no phase's leftovers
        (vacuuming a million timers, flushing the pages of a rebuild) take CPU and disk from
        the next one's measurement. Returns the seconds it took."""
        started = time.monotonic()
        for name, dsn in list(self._databases.items()):
            if dsn not in keep:
                del self._databases[name]
                self._drop_database(name)
        try:
            with psycopg.connect(self.infra.postgres_dsn, autocommit=True) as conn:
                while time.monotonic() - started < timeout and conn.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'autovacuum worker'").fetchone()[0]:
                    time.sleep(0.5)
                conn.execute("CHECKPOINT")
        except Exception as exc:  # a server that is not ours may refuse CHECKPOINT
            log(f"could not settle the server between phases: {exc}")
        return time.monotonic() - started

    def _drop_database(self, name: str) -> None:
        try:
            with psycopg.connect(self.infra.postgres_dsn, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # the server may already be gone on a hard failure
            log(f"could not drop database {name}: {exc}")

    def stream(self, purpose: str) -> tuple[str, str]:
        """A JetStream stream name and subject prefix of our own, deleted at the end."""
        stream = f"BENCH_{self.run_id.upper()}_{purpose.upper()}"
        self.exits.callback(self._delete_stream, stream)
        return stream, f"bench{self.run_id}{purpose}"

    def _delete_stream(self, stream: str) -> None:
        import nats

        async def go() -> None:
            nc = await nats.connect(self.infra.nats_url, connect_timeout=3,
                                    max_reconnect_attempts=1)
            try:
                await nc.jetstream().delete_stream(stream)
            except Exception:
                pass
            finally:
                await nc.close()

        try:
            asyncio.run(go())
        except Exception as exc:
            log(f"could not delete stream {stream}: {exc}")

    # ------------------------------------------------------------------ processes

    def services(self, dsn: str, purpose: str, webhook_port: int | None,
                 names: tuple[str, ...] = SERVICES) -> dict[str, ServiceProcess]:
        """The services (all four by default), as `make run` starts them, on this phase's
        database and stream. Returns once all are ready; the caller stops them."""
        stream, prefix = self.stream(purpose)
        self.streams[purpose] = stream
        overrides = {"POSTGRES_DSN": dsn, "NATS_STREAM": stream, "NATS_SUBJECT_PREFIX": prefix,
                     "INTAKE_GRPC_PORT": str(free_port())}
        overrides.update({PORT_VARIABLES[n]: str(free_port()) for n in SERVICES})  # all distinct
        if webhook_port is not None:
            overrides["NOTIFY_DEFAULT_WEBHOOK_URL"] = \
                f"http://127.0.0.1:{webhook_port}/units/{{unit_id}}"
        env = service_env(Infrastructure(dsn, self.infra.nats_url), overrides)
        started = [start_service(name, env, LOG_DIR / purpose) for name in names]
        services = {s.name: s for s in started}
        self.exits.callback(stop_services, services)  # safety net; callers stop them first
        try:
            wait_until_ready(started, timeout=90)
        except BaseException:
            stop_services(services)
            raise
        return services

    def process(self, argv: list[str], env: dict[str, str] | None = None,
                log_name: str | None = None) -> subprocess.Popen[Any]:
        out = open(LOG_DIR / f"{log_name}.log", "ab") if log_name else None  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                                stdout=out, stderr=subprocess.STDOUT if out else None)
        if out is not None:
            out.close()
        self.exits.callback(stop_process, proc)  # stopped at the end whoever started it
        return proc

    def baseline_app(self, dsn: str) -> tuple[subprocess.Popen[Any], int]:
        port = free_port()
        proc = self.process(
            [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
            {"BENCH_BASELINE_DSN": dsn, "PYTHONPATH": str(REPO_ROOT)}, "baseline")
        _wait_http(proc, port, "/healthz")
        return proc, port

    def receiver(self) -> tuple[subprocess.Popen[Any], int]:
        port = free_port()
        proc = self.process([sys.executable, "-m", "bench.receiver", str(port)],
                            {"PYTHONPATH": str(REPO_ROOT)}, "receiver")
        _wait_http(proc, port, "/stats")
        return proc, port

    def postgres_roots(self) -> list[int]:
        from bench.procs import pids_with_cmdline
        if "postgresql" not in self.infra.embedded:
            return []
        return pids_with_cmdline(str(self.data_dir / "postgres"))

    def nats_roots(self) -> list[int]:
        from bench.procs import pids_with_cmdline
        if "nats" not in self.infra.embedded:
            return []
        return pids_with_cmdline(str(self.data_dir / "nats"))


def stop_services(services: dict[str, ServiceProcess]) -> dict[str, int | None]:
    for s in services.values():
        if s.proc.poll() is None:
            s.proc.terminate()
    return {name: s.stop(grace=30) for name, s in services.items()}


def _wait_http(proc: subprocess.Popen[Any], port: int, path: str, timeout: float = 30) -> None:
    wait_for_port(port, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answers on 127.0.0.1:{port}{path}")


# ---------------------------------------------------------------------- the project's API, as it is


def bearer_token() -> str | None:
    """A province-wide token for the API, when the services require one (signed with the
    development key, as the services run in development mode here)."""
    try:
        from petitions.domain.access import Principal, Role
        from petitions.infra.auth import TokenAuthority
        from petitions.infra.settings import CommonAuthSettings
    except ImportError:
        return None
    authority = TokenAuthority(CommonAuthSettings().auth_signing_key)
    return authority.mint(Principal("bench-province-admin", Role.PROVINCE_ADMIN, "330000"))


def case_store(dsn: str, **kwargs: Any) -> Any:
    """A CaseStore configured like the services' (payload encryption when they use it)."""
    from petitions.infra.store import CaseStore

    params = inspect.signature(CaseStore).parameters
    if "cipher_key" in params:
        try:
            from petitions.infra.settings import CommonAuthSettings
            kwargs.setdefault("cipher_key", CommonAuthSettings().payload_encryption_key)
        except ImportError:
            pass
    return CaseStore(dsn, **kwargs)


def store_is_encrypted(store: Any) -> bool:
    return getattr(store.app.mapper, "cipher", None) is not None
