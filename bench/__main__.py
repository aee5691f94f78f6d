"""`make bench`: run every benchmark once, print the table, write docs/benchmarks.md.

Phases (each on its own fresh database and JetStream stream, all removed at the end; a phase
that fails is reported and the others still run):
  0. routing decision time with 10,000 rules over 3,000 jurisdictions (pure CPU, first);
  1. intake: the four real services as processes; closed-loop POST /v1/petitions at 8, 32 and
     64 clients (letting the consumers catch up between runs), then a fixed rate at half the
     peak; peak memory of every service; the append lock sampled meanwhile;
     1b. intake alone (its process, database and relay, no consumers) in turns with the plain
         endpoint, as in phase 1; then (diagnostic) letters of 2,000 characters (the other
         runs send one sentence) by intake alone and by the plain endpoint;
  2. baseline: plain FastAPI + asyncpg (one INSERT per POST) in its own uvicorn process, the same
     concurrencies and the same fixed rate, on the same database;
  3. end to end: one JetStream hop as the baseline, then fresh services and a webhook receiver,
     200 petitions/s for 10 s; then (diagnostic) the same at a rate the system keeps up with;
  4. projection rebuild over 100,000 events against a plain SELECT of the same rows;
  5. the audit and timer measurements, then notify alone delivering webhooks at 1,050/s, by
     two replicas and (diagnostic) by one (its own servers and receiver, signed POSTs straight
     to the receiver as the baseline).

`python -m bench --help` for durations, rates and `--only`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack
from typing import Any

import asyncpg

from bench import (
    audit_bench,
    notify_bench,
    pipeline,
    projection,
    report,
    routing,
    stages,
    timers_bench,
)
from bench.pgwatch import LockWatch
from bench.procs import CpuMeter, Group, status_kb
from bench.report import Row, md_list_table, ratio
from bench.stack import (
    Stack,
    bearer_token,
    case_store,
    log,
    stop_services,
    store_is_encrypted,
)
from petitions.devstack import REPO_ROOT, stop_process
from petitions.infra.dsn import as_uri


def _on_sigterm(*_: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


# ---------------------------------------------------------------------------- load runs


_seeds = iter(range(1, 500))


def run_load(port: int, *, mode: str, concurrency: int, duration: float, token: str | None,
             rate: float | None = None, record: bool = False, warmup: float = 0.0,
             meter: CpuMeter | None = None, stages_port: int | None = None,
             letter_chars: int = 0) -> dict[str, Any]:
    """One run of the load generator; `stages_port`: intake's, to read its registration
    stages over the run (after the warm-up, as the CPU meter)."""
    argv = [sys.executable, "-m", "bench.load", "--port", str(port), "--mode", mode,
            "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup), "--seed", str(next(_seeds))]
    if rate is not None:
        argv += ["--rate", f"{rate:.1f}"]
    if token:
        argv += ["--token", token]
    if record:
        argv.append("--record")
    if letter_chars:
        argv += ["--letter-chars", str(letter_chars)]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    before = None
    try:
        if meter is not None or stages_port is not None:
            time.sleep(warmup + 0.3)  # skip the generator's start-up and warm-up
        if meter is not None:
            meter.start()
        if stages_port is not None:
            before = stages.snapshot(stages_port)
        out, _ = proc.communicate(timeout=duration + warmup + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    result = json.loads(out)
    if meter is not None:
        result["cpu_cores"] = meter.stop()
    if before is not None:
        result["stages"] = stages.means(before, stages.snapshot(stages_port))
    return result


def describe_load(r: dict[str, Any]) -> str:
    other = {k: v for k, v in r["statuses"].items() if not k.startswith("2")}
    errs = {**{f"HTTP {k}": v for k, v in other.items()}, **r["errors"]}
    return ", ".join(f"{k}: {v}" for k, v in errs.items()) or "none"


# ---------------------------------------------------------------------------- phases


def closed_run(label: str, port: int, concurrency: int, args: argparse.Namespace,
               token: str | None, groups: list[Group], lock_dsn: str | None = None,
               drained: Any = None, stages_port: int | None = None,
               letter_chars: int = 0) -> dict[str, Any]:
    """One closed-loop run: `concurrency` clients for the stated duration after a warm-up."""
    log(f"{label}: {concurrency} concurrent clients, {args.duration:.0f} s")
    watch = LockWatch(lock_dsn) if lock_dsn else None
    if watch:
        watch.__enter__()
    try:
        r = run_load(port, mode="closed", concurrency=concurrency, duration=args.duration,
                     token=token, warmup=1.0, meter=CpuMeter(groups), stages_port=stages_port,
                     letter_chars=letter_chars)
    finally:
        if watch:
            watch.__exit__()
    r.pop("records")
    r["concurrency"] = concurrency
    r["drained_before"] = drained
    if watch:
        r["lock"] = watch.summary()
    log(_run_line(r))
    return r


def fixed_run(label: str, port: int, rate: float, args: argparse.Namespace,
              token: str | None, groups: list[Group], drained: Any = None,
              stages_port: int | None = None) -> dict[str, Any]:
    """One open-loop run at a fixed rate over 64 connections, after a warm-up at that rate
    (as the closed runs have theirs): what is measured is the steady state at that load, not
    the step from idle to it."""
    log(f"{label}: fixed rate {rate:.0f}/s, {args.duration:.0f} s")
    r = run_load(port, mode="open", concurrency=64, duration=args.duration, rate=rate,
                 token=token, warmup=1.0, meter=CpuMeter(groups), stages_port=stages_port)
    r.pop("records")
    r["rate"] = rate
    r["drained_before"] = drained
    log(_run_line(r))
    return r


def _run_line(r: dict[str, Any]) -> str:
    """A load run's log line: throughput, latency, CPU, and what else was measured."""
    return (f"  -> {r['throughput']:.0f}/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms; "
            f"cpu {r['cpu_cores']} generator {r['generator_cpu_cores']}"
            + (f"; lock {r['lock']}" if r.get("lock") else "")
            + (f"; stages {r['stages']}" if r.get("stages") else ""))


def settler(drain: Any) -> Any:
    """`drain()` (when given) waits for the consumers to catch up, so that no run starts
    behind the previous one's backlog; returns (seconds waited, backlog left)."""
    def settle() -> tuple[float, int] | None:
        if drain is None:
            return None
        waited, left = drain()
        log(f"  (waited {waited} s for the consumers to catch up; backlog {left})")
        return waited, left
    return settle


def sweep(label: str, port: int, args: argparse.Namespace, token: str | None,
          groups: list[Group], lock_dsn: str | None, half_rate: float | None = None,
          drain: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Closed-loop runs at each concurrency, then a fixed-rate run (at `half_rate`, or half of
    this sweep's peak)."""
    settle = settler(drain)
    runs = [closed_run(label, port, c, args, token, groups, lock_dsn, settle())
            for c in args.concurrency]
    peak = max(r["throughput"] for r in runs)
    rate = half_rate if half_rate is not None else max(peak / 2, 1.0)
    return runs, fixed_run(label, port, rate, args, token, groups, settle())


def paired_sweep(intake: tuple[int, list[Group]], plain: tuple[int, list[Group]],
                 args: argparse.Namespace, token: str | None, lock_dsn: str,
                 drain: Any) -> dict[str, Any]:
    """Intake and the plain endpoint in turns: each concurrency run by intake, then at once by
    the plain endpoint (the consumers caught up first), the highest once more in the other
    order, then both at intake's half-peak rate.
    The machine's speed drifts over minutes; a baseline measured seconds apart is compared
    with what it ran beside, not with the machine of several minutes before."""
    settle = settler(drain)
    runs, base = [], []
    for c in args.concurrency:
        runs.append(closed_run("intake", intake[0], c, args, token, intake[1], lock_dsn,
                               settle(), stages_port=intake[0]))
        base.append(closed_run("baseline", plain[0], c, args, None, plain[1], None, settle()))
    # The highest concurrency once more, the plain endpoint first this time: each side's peak
    # is its best run, so one run that the machine slowed does not decide the ratio alone.
    top = max(args.concurrency)
    base.append(dict(closed_run("baseline", plain[0], top, args, None, plain[1], None,
                                settle()), again=True))
    runs.append(dict(closed_run("intake", intake[0], top, args, token, intake[1], lock_dsn,
                                settle(), stages_port=intake[0]), again=True))
    rate = max(max(r["throughput"] for r in runs) / 2, 1.0)
    half = fixed_run("intake", intake[0], rate, args, token, intake[1], settle(),
                     stages_port=intake[0])
    base_half = fixed_run("baseline", plain[0], rate, args, None, plain[1], settle())
    return {"intake_runs": runs, "intake_half": half, "baseline_runs": base,
            "baseline_half": base_half}


def baseline_groups(stack: Stack, plain: subprocess.Popen[Any]) -> list[Group]:
    return [Group("baseline", lambda: [plain.pid]),
            Group("postgresql", stack.postgres_roots, with_descendants=True)]


def service_groups(stack: Stack, services: dict[str, Any]) -> list[Group]:
    groups = [Group(n, (lambda s=s: [s.proc.pid])) for n, s in services.items()]
    return groups + [Group("postgresql", stack.postgres_roots, with_descendants=True),
                     Group("nats", stack.nats_roots)]


def phase_intake(stack: Stack, args: argparse.Namespace, token: str | None,
                 receiver_port: int, out: dict[str, Any]) -> None:
    dsn = stack.database("intake")
    out["intake_dsn"] = dsn
    log("phase 1: starting the four services, and the plain endpoint on the same database")
    services = stack.services(dsn, "intake", receiver_port)
    plain = None
    try:
        plain, plain_port = stack.baseline_app(dsn)
        stream = stack.streams["intake"]
        out.update(paired_sweep(
            (services["intake"].port, service_groups(stack, services)),
            (plain_port, baseline_groups(stack, plain)), args, token, dsn,
            drain=lambda: asyncio.run(pipeline.wait_drained(
                stack.infra.nats_url, stream, dsn, args.drain_between))))
        out["intake_peak"] = max(r["throughput"] for r in out["intake_runs"])
        out["memory_intake_phase"] = {n: status_kb(s.proc.pid, "VmHWM")
                                      for n, s in services.items()}
        out["memory_baseline"] = status_kb(plain.pid, "VmHWM")
        out["intake_db"] = asyncio.run(_log_stats(dsn))
    finally:
        if plain is not None:
            stop_process(plain)
        out["intake_exit_codes"] = stop_services(services)


def phase_intake_alone(stack: Stack, args: argparse.Namespace, token: str | None,
                       out: dict[str, Any]) -> None:
    """Intake as a service: its process, its database and its relay to NATS, with no consumers
    on the machine, in turns with the plain endpoint on the same database (each concurrency,
    then both at half of intake's peak)."""
    dsn = stack.database("alone")
    log("phase 1b: intake alone (no routing/deadlines/notify), in turns with the plain endpoint")
    services = stack.services(dsn, "alone", None, names=("intake",))
    plain = None
    try:
        plain, plain_port = stack.baseline_app(dsn)
        paired = paired_sweep(
            (services["intake"].port, service_groups(stack, services)),
            (plain_port, baseline_groups(stack, plain)), args, token, dsn, drain=None)
        out.update(alone_runs=paired["intake_runs"], alone_half=paired["intake_half"],
                   alone_baseline_runs=paired["baseline_runs"],
                   alone_baseline_half=paired["baseline_half"])
        out["alone_db"] = asyncio.run(_log_stats(dsn))
        stop_process(plain)
        plain = None
        out["letters"] = long_letters(stack, args, token, dsn, services)
    finally:
        if plain is not None:
            stop_process(plain)
        stop_services(services)


LETTER_CHARS = 2_000
LETTER_CLIENTS = 32


def long_letters(stack: Stack, args: argparse.Namespace, token: str | None, dsn: str,
                 services: dict[str, Any]) -> dict[str, Any]:
    """Diagnostic: letters of 2,000 characters, as written letters run (the other runs send
    one sentence, as a short online form): intake alone, then at once the plain endpoint."""
    plain, plain_port = stack.baseline_app(dsn)
    try:
        out = {
            "intake": closed_run(
                f"intake alone, letters of {LETTER_CHARS:,} characters",
                services["intake"].port, LETTER_CLIENTS, args, token,
                service_groups(stack, services), stages_port=services["intake"].port,
                letter_chars=LETTER_CHARS),
            "plain": closed_run(
                f"plain, letters of {LETTER_CHARS:,} characters", plain_port, LETTER_CLIENTS,
                args, None, baseline_groups(stack, plain), letter_chars=LETTER_CHARS)}
    finally:
        stop_process(plain)
    for r in out.values():
        r["concurrency"] = f"{LETTER_CLIENTS}, letters of {LETTER_CHARS:,} characters"
    return out


async def _log_stats(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT split_part(topic, '.', -1) AS type, count(*) AS events, "
            "count(DISTINCT xmin::text) AS transactions FROM cases_events GROUP BY 1 ORDER BY 1")
        return {r["type"]: {"events": r["events"], "transactions": r["transactions"]}
                for r in rows}
    finally:
        await conn.close()


def phase_baseline(stack: Stack, args: argparse.Namespace, out: dict[str, Any]) -> None:
    if "baseline_runs" in out:
        return  # measured in turns with intake (phase 1)
    log("phase 2: plain FastAPI + asyncpg baseline")
    dsn = out.get("intake_dsn") or stack.database("plain")
    proc, port = stack.baseline_app(dsn)
    try:
        groups = baseline_groups(stack, proc)
        # the fixed-rate run uses intake's half-peak rate: the same offered load for both
        rate = max(out["intake_peak"] / 2, 1.0) if "intake_peak" in out else None
        runs, half = sweep("baseline", port, args, None, groups, None, half_rate=rate)
        out["baseline_runs"], out["baseline_half"] = runs, half
        out["memory_baseline"] = status_kb(proc.pid, "VmHWM")
    finally:
        stop_process(proc)


def e2e_run(services: dict[str, Any], stack: Stack, dsn: str, store: Any, rate: float,
            duration: float, token: str | None, receiver_port: int, drain_timeout: float,
            label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One open-loop run recording each 201, then the notices and the case histories."""
    log(f"{label}: {rate:.0f} petitions/s for {duration:.0f} s")
    r = run_load(services["intake"].port, mode="open", concurrency=32, duration=duration,
                 rate=rate, token=token, record=True, meter=CpuMeter(service_groups(stack,
                                                                                   services)))
    records = r.pop("records")
    r["rate"] = rate
    log(f"  -> {r['ok']} registered, 201 p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms; "
        "waiting for the notices")
    case_ids = {c for c, _, _ in records}
    t0 = time.monotonic()
    arrivals = asyncio.run(pipeline.wait_for_notices(receiver_port, case_ids, drain_timeout))
    r["notice_wait_s"] = round(time.monotonic() - t0, 1)
    r["receiver"] = asyncio.run(pipeline.receiver_stats(receiver_port))
    log(f"  -> {len(arrivals)} of {len(case_ids)} assignment notices arrived in "
        f"{r['notice_wait_s']} s (receiver so far: {r['receiver']}); reading the event times")
    deadline = time.monotonic() + 10  # a notice is recorded just after it is delivered
    while True:
        events = asyncio.run(pipeline.store_histories(dsn, store, sorted(case_ids)))
        complete = all(all(t in events.get(c, {}) for t in pipeline.WANTED) for c in case_ids)
        if complete or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    lat = pipeline.latencies(records, arrivals, events)
    log("  -> " + ", ".join(f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms"
                            for k, v in lat.items() if isinstance(v, dict)))
    return r, lat


def phase_e2e(stack: Stack, args: argparse.Namespace, token: str | None,
              receiver_port: int, out: dict[str, Any]) -> None:
    dsn = stack.database("e2e")
    stream, prefix = stack.stream("hop")
    log(f"phase 3: baseline JetStream hop at {args.e2e_rate:.0f}/s")
    out["hop"] = asyncio.run(pipeline.jetstream_hop(stack.infra.nats_url, stream, prefix,
                                                    args.e2e_rate, min(args.e2e_duration, 5)))
    log(f"  -> p50 {out['hop']['p50_ms']} ms p99 {out['hop']['p99_ms']} ms")
    log("phase 3: fresh services for the end-to-end run")
    services = stack.services(dsn, "e2e", receiver_port)
    store = case_store(dsn, pool_size=1)
    try:
        out["e2e_load"], out["e2e"] = e2e_run(
            services, stack, dsn, store, args.e2e_rate, args.e2e_duration, token, receiver_port,
            args.drain_timeout, "end to end")
        out["memory_e2e_phase"] = {n: status_kb(s.proc.pid, "VmHWM") for n, s in services.items()}
        # Diagnostic: the same path at a rate this system keeps up with, to separate the
        # pipeline's own latency from queueing behind an overload.
        low = min(args.e2e_rate / 4, max(out.get("intake_peak", 100) / 4, 5.0))
        waited, left = asyncio.run(pipeline.wait_drained(
            stack.infra.nats_url, stack.streams["e2e"], dsn, 30))
        log(f"drained in {waited} s (backlog {left})")
        out["e2e_low_load"], out["e2e_low"] = e2e_run(
            services, stack, dsn, store, low, 5, token, receiver_port, 30,
            "end to end, low rate")
    finally:
        store.close()
        out["e2e_exit_codes"] = stop_services(services)


def phase_projection(stack: Stack, args: argparse.Namespace, out: dict[str, Any]) -> None:
    dsn = stack.database("projection")
    store = case_store(dsn, pool_size=2)
    try:
        out["projection_encrypted"] = store_is_encrypted(store)
        log(f"phase 4: writing {args.events} events (CaseStore.save, 100 cases a transaction)")
        out["projection_write"] = projection.write_log(store, args.events)
        log(f"  -> {out['projection_write']['save_events_per_s']:.0f} events/s saved; rebuilding")
        out["projection"] = asyncio.run(projection.rebuild_and_select(as_uri(dsn), store))
        p = out["projection"]
        log(f"  -> rebuild {p['rebuild_events_per_s']:.0f} events/s, "
            f"plain SELECT {p['select_rows_per_s']:.0f} rows/s; rebuild CPU s: "
            f"{p['rebuild_cpu_s']:.2f} parent, {p['rebuild_workers_cpu_s']:.2f} workers, "
            f"{p['rebuild_server_cpu_s'] or 0:.2f} PostgreSQL "
            f"({p['autovacuums_during_rebuild']} autovacuum runs meanwhile)")
    finally:
        store.close()


# ---------------------------------------------------------------------------- the table


def phase_measurements(name: str, stack: Stack, out: dict[str, Any]) -> None:
    """Self-contained measurements (each with its own scratch database and baseline)."""
    module = {"audit": audit_bench, "timers": timers_bench}[name]
    log(f"phase: {name} measurements")
    out.setdefault("measurement_rows", []).extend(module.run(stack.infra.postgres_dsn))


def phase_notify(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Webhook deliveries from notify alone (its own servers, receiver and baseline): as
    deployed, by replicas sharing the consumer (production runs three or more; two here, one
    a core); then, as a diagnostic, one replica alone."""
    log(f"phase: notify at {args.notify_rate:.0f} deliveries/s, "
        f"{args.notify_replicas} replicas")
    rows = notify_bench.run(rate=args.notify_rate, duration=args.notify_duration,
                            replicas=args.notify_replicas)
    log("phase: notify, one replica (diagnostic)")
    alone = notify_bench.run(rate=args.notify_rate, duration=args.notify_duration, replicas=1)
    rows += [{**r, "what": r["what"].replace("notify:", "notify, one replica (diagnostic):"),
              "target": None, "met": None} for r in alone if _one_replica_row(r["what"])]
    out.setdefault("measurement_rows", []).extend(
        {**r, "baseline": r.get("baseline") or "—", "target": r.get("target") or "—"}
        for r in rows)
    out["notify"] = {"rate": args.notify_rate, "duration": args.notify_duration,
                     "replicas": args.notify_replicas}


def _notify_method(n: dict[str, Any]) -> str:
    return (
        f"Notify alone, on a database and JetStream stream of its own, {n['replicas']} "
        "replicas sharing its durable consumer (production runs three or more; here, one per "
        "core), and a "
        "webhook receiver process on loopback that de-duplicates on the idempotency key. "
        f"After a warm-up ({notify_bench.WARM_UP} events at {notify_bench.WARM_UP_RATE:.0f}/s, "
        "not measured), `RoutedToUnit` is committed for registered cases at "
        f"{n['rate']:,.0f}/s for {n['duration']:.0f} s, as routing commits (batches every "
        "10 ms over asyncpg); each makes one signed assignment slip to the lead unit. Latency "
        "runs from each event's commit (when the store's transaction returned) to the "
        "receiver's first arrival; its stages are the event's JetStream timestamp and its "
        "delivery row's creation (the plan's transaction). Deliveries/s is the number "
        "delivered over the span from the first to the last arrival; the offered rate, over "
        "the span of the commits. The relay runs in one of the replicas (the only services "
        "up). The one-replica rows come from a second run, the same with a single process.")


def _one_replica_row(what: str) -> bool:
    return "deliveries/s" in what or "receiver p99" in what or "CPU per delivery" in what


def _fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def _mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.0f} MB"


def _again(run: dict[str, Any]) -> str:
    """", again" for the second run at the highest concurrency."""
    return ", again" if run.get("again") else ""


def _clients(run: dict[str, Any]) -> str:
    return f"{run['concurrency']} clients{_again(run)}"


def _paired_rows(what: str, runs: list[dict[str, Any]], baseline: list[dict[str, Any]],
                 half: dict[str, Any], baseline_half: dict[str, Any],
                 held_to_targets: bool = True) -> list[Row]:
    """Each concurrency beside the plain endpoint's, the peaks (target 0.6×), and the
    latency at half of intake's peak (target p99 < 50 ms); without the targets (and named
    a diagnostic) when not `held_to_targets`."""
    rows = []
    base = {_clients(r): r for r in baseline}
    for r in runs:
        b = base.get(_clients(r), {})
        rows.append(Row(
            f"{what} POST/s, {_clients(r)} (p50 / p99)",
            f"{r['throughput']:.0f}/s ({_fmt_ms(r['p50_ms'])} / {_fmt_ms(r['p99_ms'])})",
            f"{b.get('throughput', 0):.0f}/s ({_fmt_ms(b.get('p50_ms'))} / "
            f"{_fmt_ms(b.get('p99_ms'))})",
            ratio(r["throughput"], b.get("throughput")), "—", None))
    ip = max(r["throughput"] for r in runs)
    bp = max(r["throughput"] for r in baseline)
    h, bh = half, baseline_half
    half_met = (h["p99_ms"] is not None and h["p99_ms"] < 50
                and h["ok"] >= 0.95 * h["rate"] * h["elapsed_s"] * 0.9)
    named = what if held_to_targets else f"diagnostic: {what}"
    rows.append(Row(f"{named}: peak throughput", f"{ip:.0f}/s", f"{bp:.0f}/s", ratio(ip, bp),
                    *(("≥ 0.6× baseline", ip >= 0.6 * bp) if held_to_targets else ("—", None))))
    rows.append(Row(
        f"{named}: latency at half of its peak ({h['rate']:.0f}/s fixed rate), p50 / p99",
        f"{_fmt_ms(h['p50_ms'])} / {_fmt_ms(h['p99_ms'])}",
        f"{_fmt_ms(bh['p50_ms'])} / {_fmt_ms(bh['p99_ms'])}",
        ratio(h["p99_ms"], bh["p99_ms"], 1) + " (p99)",
        *(("p99 < 50 ms", half_met) if held_to_targets else ("—", None))))
    return rows


ALONE = "intake (its process, database and relay; no consumers)"
WITH_CONSUMERS = "intake with routing, deadlines and notify on the same two cores"


def build_rows(out: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    if "alone_runs" in out and "alone_baseline_runs" in out:
        rows += _paired_rows(ALONE, out["alone_runs"], out["alone_baseline_runs"],
                             out["alone_half"], out["alone_baseline_half"])
    if "intake_runs" in out and "baseline_runs" in out:
        # The targets are intake's as a service, on the cores it is given (as the plain app
        # is given them): the pipeline sharing them is what two cores carry all told.
        rows += _paired_rows(WITH_CONSUMERS, out["intake_runs"], out["baseline_runs"],
                             out["intake_half"], out["baseline_half"], held_to_targets=False)
        letters = out.get("letters")
        if letters:
            li, lp = letters["intake"]["throughput"], letters["plain"]["throughput"]
            rows.append(Row(f"diagnostic: intake alone, letters of {LETTER_CHARS:,} characters "
                            f"({LETTER_CLIENTS} clients)", f"{li:.0f}/s",
                            f"{lp:.0f}/s (the same letters)", ratio(li, lp), "—", None))
        rows += _cpu_rows(out)
    if "e2e" in out:
        e, hop = out["e2e"], out.get("hop", {})
        hop_s = f"{_fmt_ms(hop.get('p50_ms'))} / {_fmt_ms(hop.get('p99_ms'))} (one bus hop)"
        for key, label, target in (("routed", "201 → routing event", None),
                                   ("deadline", "201 → deadline event", None),
                                   ("notice_delivered", "201 → notice delivered", 250.0)):
            v = e[key]
            miss = f", {v['missing']} missing" if v["missing"] else ""
            met = None if target is None else (v["p99_ms"] is not None and v["missing"] == 0
                                               and v["p99_ms"] < target)
            rows.append(Row(
                f"end to end at {out['e2e_load_rate']:.0f}/s: {label}, p50 / p99",
                f"{_fmt_ms(v['p50_ms'])} / {_fmt_ms(v['p99_ms'])}{miss}", hop_s,
                ratio(v["p99_ms"], hop.get("p99_ms"), 1) + " (p99)",
                "p99 < 250 ms" if target else "—", met))
        if "e2e_low" in out:
            v = out["e2e_low"]["notice_delivered"]
            miss = f", {v['missing']} missing" if v["missing"] else ""
            rows.append(Row(
                f"diagnostic: end to end at {out['e2e_low_load']['rate']:.0f}/s: 201 → notice "
                "delivered, p50 / p99", f"{_fmt_ms(v['p50_ms'])} / {_fmt_ms(v['p99_ms'])}{miss}",
                hop_s, ratio(v["p99_ms"], hop.get("p99_ms"), 1) + " (p99)", "—", None))
    if "projection" in out:
        p = out["projection"]
        rows.append(Row(
            f"projection rebuild ({p['events']:,} events)",
            f"{p['rebuild_events_per_s']:,.0f} events/s",
            f"{p['select_rows_per_s']:,.0f} rows/s (plain SELECT)",
            ratio(p["rebuild_events_per_s"], p["select_rows_per_s"], 3), "≥ 50,000 events/s",
            p["rebuild_events_per_s"] >= 50_000))
    mem_base = out.get("memory_baseline")
    for name in ("intake", "routing", "deadlines", "notify"):
        peaks = [m.get(name) for m in (out.get("memory_intake_phase", {}),
                                       out.get("memory_e2e_phase", {})) if m.get(name)]
        if peaks:
            kb = max(peaks)
            rows.append(Row(f"peak resident memory (VmHWM), {name}", _mb(kb),
                            f"{_mb(mem_base)} (plain app)", ratio(kb, mem_base),
                            "< 300 MB", kb < 300 * 1024))
    for m in out.get("measurement_rows", []):
        rows.append(Row(m["what"], str(m["measured"]), str(m.get("baseline", "—")), "",
                        str(m.get("target", "—")), m.get("met")))
    if "routing" in out:
        r = out["routing"]
        rows.append(Row(
            f"routing decision, {r['rules']:,} rules, {r['jurisdictions']:,} jurisdictions "
            "(median)", f"{r['median_ms'] * 1000:.0f} µs",
            f"{r['naive_median_ms'] * 1000:.0f} µs (scan every rule)",
            ratio(r["median_ms"], r["naive_median_ms"], 3), "< 1 ms", r["median_ms"] < 1.0))
    return rows


def cpu_ms_per_request(run: dict[str, Any]) -> float | None:
    """CPU of every measured process (service, PostgreSQL, NATS; not the load generator) per
    request answered, in milliseconds."""
    cores = sum((run.get("cpu_cores") or {}).values())
    return cores / run["throughput"] * 1000 if run.get("throughput") and cores else None


def _cpu_rows(out: dict[str, Any]) -> list[Row]:
    """What a request costs the machine, beside the plain endpoint's INSERT: on two cores,
    capacity is CPU, so these say where the throughput ratio comes from."""
    plain_peak = max(out["baseline_runs"], key=lambda r: r["throughput"])
    plain = cpu_ms_per_request(plain_peak)
    plain_s = f"{plain:.2f} ms (plain endpoint + PostgreSQL, at its peak)" if plain else "—"
    rows = []
    # (not intake's closed-loop runs with the consumers: those fall behind and do their part
    # of the work after the run)
    runs = [("intake alone at its peak (intake + PostgreSQL + NATS)",
             max(out["alone_runs"], key=lambda r: r["throughput"])
             if out.get("alone_runs") else None)]
    if "e2e_load" in out:
        runs.append((f"the whole pipeline at {out['e2e_load_rate']:.0f}/s (all six processes, "
                     "every petition routed, clocked and notified)", out["e2e_load"]))
    for what, run in runs:
        ms = cpu_ms_per_request(run) if run else None
        if ms is not None:
            rows.append(Row(f"diagnostic: CPU per petition, {what}", f"{ms:.2f} ms", plain_s,
                            ratio(ms, plain, 1), "—", None))
    return rows


def build_sections(out: dict[str, Any]) -> list[tuple[str, str]]:
    sections: list[tuple[str, str]] = []
    if "intake_runs" in out:
        header = ["target", "clients", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors",
                  "generator CPU (cores)", "CPU by process (cores)",
                  "append lock: held % / avg waiters / holder idle on client %",
                  "registration, mean ms: queued / screen / commit "
                  "(petitions per screening / cases per commit)"]
        rows = []
        letters = out.get("letters", {})
        for label, runs, half in (("intake alone", out.get("alone_runs", []),
                                   out.get("alone_half")),
                                  ("plain", out.get("alone_baseline_runs", []),
                                   out.get("alone_baseline_half")),
                                  ("intake", out["intake_runs"], out["intake_half"]),
                                  ("plain", out.get("baseline_runs", []),
                                   out.get("baseline_half")),
                                  ("intake alone", [letters["intake"]] if letters else [], None),
                                  ("plain", [letters["plain"]] if letters else [], None)):
            for r in runs + ([dict(half, concurrency=f"{half['rate']:.0f}/s fixed")]
                             if half else []):
                cpu = ", ".join(f"{k} {v}" for k, v in r.get("cpu_cores", {}).items() if v)
                lock = r.get("lock") or {}
                lock_s = (f"{lock['held_pct']} / {lock['avg_waiters']} / "
                          f"{lock['holder_pct'].get('waiting for its client', 0)}"
                          if lock else "—")
                rows.append([label, f"{r['concurrency']}{_again(r)}",
                             f"{r['throughput']:.0f}", r["p50_ms"],
                             r["p90_ms"], r["p99_ms"], describe_load(r),
                             r["generator_cpu_cores"], cpu, lock_s,
                             stages.describe(r.get("stages"))])
        body = (
            "Closed loop: N clients on keep-alive connections, each sending its next POST when "
            "the previous one is answered, for the stated duration after a 1 s warm-up. Fixed "
            "rate: open loop over 64 connections, latency from each request's scheduled time, "
            "after 1 s at the same rate on the same connections, unmeasured. "
            "\"intake alone\" is intake as a service: its real process, its database and its "
            "relay publishing every event to NATS, with nothing else on the machine's two "
            "cores, as the plain app runs. \"intake\" is the same with the other three services "
            "running beside it on those two cores (they consume what intake registers, and "
            "take their share of the CPU while they do). That run is not held to intake's "
            "targets, which are for intake as a service, given its cores as the plain app is "
            "given them: it shows what two cores carry of the whole pipeline (every petition "
            "registered, routed, clocked and notified). Each is measured in turns with a plain "
            "app on the same database: each concurrency by intake, then at once by the plain "
            "app (the consumers caught up and idle), the highest concurrency once more with "
            "the plain app first, then both at half of intake's peak, so that each is compared "
            "with the machine as it was seconds, not minutes, apart; each side's peak is its "
            "best run. "
            "Every request is a new petitioner with new wording, so each registers a new case "
            "(none is matched as a repeat or duplicate). The generator is its own process "
            "(asyncio, pre-serialised requests). The lock column samples pg_locks every ~10 ms: "
            "how often some transaction holds the append lock (every append takes turns on it), "
            "how many wait "
            "behind it, and how often the holder is idle in its transaction, waiting for its "
            "Python client to send the next statement. The last column is read off intake's "
            "/metrics over the run: the mean time a new case waits for its batch to start, "
            "of its batch's screening statement, and of its batch's append transaction; the "
            "mean petitions per screening statement and cases per append transaction.\n\n"
            + md_list_table(header, rows))
        waits = [r.get("drained_before") for r in out["intake_runs"] + [out["intake_half"]]]
        if any(waits):
            body += ("\n\nBefore each intake run the bench let the consumers catch up with the "
                     "previous run's backlog (seconds waited / backlog left): "
                     + ", ".join(f"{w[0]} s / {w[1]}" for w in waits if w) + ".")
        db = out.get("intake_db")
        if db:
            body += "\n\nEvents in the intake phase's store (events per transaction shows the " \
                    "group commit at work, and how far the consumers got):\n\n" + md_list_table(
                        ["event", "events", "transactions", "events/transaction"],
                        [[k, v["events"], v["transactions"],
                          f"{v['events'] / max(v['transactions'], 1):.1f}"]
                         for k, v in db.items()])
        sections.append(("Intake throughput and latency", body))
    if "e2e" in out:
        parts = []
        for key, load_key, what in (("e2e", "e2e_load", "The run at the target rate"),
                                    ("e2e_low", "e2e_low_load",
                                     "Diagnostic: the same path at a rate this system keeps up "
                                     "with (after the backlog of the first run drained)")):
            if key not in out:
                continue
            e, load = out[key], out[load_key]
            rows = [[k, v["n"], v["missing"], v["p50_ms"], v["p99_ms"], v["max_ms"]]
                    for k, v in e.items() if isinstance(v, dict)]
            cpu = ", ".join(f"{k} {v}" for k, v in load.get("cpu_cores", {}).items() if v)
            parts.append(
                f"**{what}**: {load['ok']} petitions offered at {load['rate']:.0f}/s for "
                f"{load['elapsed_s']:.0f} s including the queue's tail (open loop; errors: "
                f"{describe_load(load)}); their 201s: p50 {load['p50_ms']} ms, p99 "
                f"{load['p99_ms']} ms. Notices delivered at {e.get('completion_per_s', 0):.0f} "
                f"cases/s on average, from the first 201 to the last notice (waited "
                f"{load.get('notice_wait_s')} s after the last 201). CPU (cores): {cpu}.\n\n"
                + md_list_table(["from the 201 to", "n", "missing", "p50 ms", "p99 ms",
                                 "max ms"], rows))
        body = (
            "Routing and deadline times are the `RoutedToUnit` and `ClockStarted` events' "
            "timestamps (`recorded_at`, read from the event store and decoded as the services "
            "do) minus the moment the load generator received the 201; `notice_recorded` is "
            "the `NoticeDelivered` event; `notice_delivered` is the webhook receiver's arrival "
            "time. One machine, one clock. The baseline is one JetStream hop at the same rate "
            "(publish → durable pull consumer taking up to 64 as soon as one is there, with "
            "explicit acks, as the services consume): the notice needs two such hops plus three store commits.\n\n"
            + "\n\n".join(parts))
        sections.append(("End to end", body))
    if "projection" in out:
        p, w = out["projection"], out["projection_write"]
        body = (
            f"{w['cases']:,} cases × 4 events (Registered, RoutedToUnit, ClockStarted, "
            f"NoticeDelivered), written with `CaseStore.save` 100 cases a transaction at "
            f"{w['save_events_per_s']:,.0f} events/s. Payload encryption: "
            f"{'on (as the services run)' if out.get('projection_encrypted') else 'off'}.\n\n"
            + md_list_table(["step", "seconds", "per second"], [
                ["`CaseSummaryProjection.rebuild()`", f"{p['rebuild_s']:.2f}",
                 f"{p['rebuild_events_per_s']:,.0f} events"],
                ["plain `SELECT * FROM cases_events` (asyncpg fetch)", f"{p['select_s']:.2f}",
                 f"{p['select_rows_per_s']:,.0f} rows"],
                ["decoding those rows alone (`CaseStore.decode`)", f"{p['decode_s']:.2f}",
                 f"{p['decode_events_per_s']:,.0f} events"],
            ]) + f"\n\nRebuilt {p['summaries']:,} summaries.")
        sections.append(("Projection rebuild", body))
    if "routing" in out:
        r = out["routing"]
        body = (f"{r['jurisdictions']:,} jurisdictions (1 province, 50 cities, the rest "
                f"counties), {r['units']:,} units, {r['rules']:,} synthetic rules (built in "
                f"{r['build_s']} s). {r['decisions']:,} decisions with `Router.decide`: median "
                f"{r['median_ms'] * 1000:.1f} µs, p99 {r['p99_ms'] * 1000:.1f} µs. Baseline: "
                f"every rule checked with `RoutingRule.matches` and sorted by `rank_key`, "
                f"{r['naive_decisions']} decisions (same winner in {r['naive_agrees']}).")
        sections.append(("Routing", body))
    if "notify" in out:
        sections.append(("Notify", _notify_method(out["notify"])))
    mem_rows = []
    for name in ("intake", "routing", "deadlines", "notify"):
        mem_rows.append([name, _mb(out.get("memory_intake_phase", {}).get(name)),
                         _mb(out.get("memory_e2e_phase", {}).get(name))])
    if out.get("memory_baseline"):
        mem_rows.append(["plain app (baseline)", _mb(out["memory_baseline"]), "—"])
    sections.append(("Peak memory", "VmHWM from /proc/<pid>/status at the end of each phase.\n\n"
                     + md_list_table(["process", "intake phase", "end-to-end phase"], mem_rows)))
    codes = {**{f"intake phase {k}": v for k, v in out.get("intake_exit_codes", {}).items()},
             **{f"e2e phase {k}": v for k, v in out.get("e2e_exit_codes", {}).items()}}
    bad = {k: v for k, v in codes.items() if v != 0}
    if bad:
        sections.append(("Unclean shutdowns", ", ".join(f"{k}: {v}" for k, v in bad.items())))
    return sections


# ---------------------------------------------------------------------------- main


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                   default=[8, 32, 64], help="closed-loop client counts (default 8,32,64)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    p.add_argument("--e2e-rate", type=float, default=200.0)
    p.add_argument("--e2e-duration", type=float, default=10.0)
    p.add_argument("--events", type=int, default=100_000, help="events for the rebuild")
    p.add_argument("--drain-timeout", type=float, default=60.0,
                   help="max seconds to wait for the end-to-end notices")
    p.add_argument("--drain-between", type=float, default=20.0,
                   help="max seconds to let the consumers catch up between intake runs")
    p.add_argument("--notify-rate", type=float, default=1050.0,
                   help="webhook deliveries/s offered to notify (a little above the 1,000/s "
                        "of the target: delivered at the offered rate, then, reads >= 1,000)")
    p.add_argument("--notify-replicas", type=int, default=2,
                   help="notify processes sharing the consumer")
    p.add_argument("--notify-duration", type=float, default=8.0)
    p.add_argument("--only",
                   default="routing,intake,alone,baseline,e2e,projection,audit,timers,notify",
                   help="comma-separated phases to run")
    p.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    a = p.parse_args(argv)
    if a.duration > 60 or a.e2e_duration > 60 or a.events > 1_000_000:
        p.error("keep runs bounded: duration <= 60 s, events <= 1,000,000")
    a.only = set(a.only.split(","))
    return a


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    out: dict[str, Any] = {"e2e_load_rate": args.e2e_rate}
    failures: dict[str, str] = {}
    env = report.machine()
    env["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def phase(name: str, fn: Any, *a: Any) -> None:
        """Run one phase; a failure is reported and the other phases still run."""
        if name not in args.only:
            return
        try:
            fn(*a)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            log(f"phase {name} failed: {failures[name]}")
            traceback.print_exc()

    def routing_phase() -> None:
        log("phase 0: routing decisions")
        out["routing"] = routing.run()
        log(f"  -> median {out['routing']['median_ms'] * 1000:.1f} µs")

    interrupted = False
    phase("routing", routing_phase)
    with ExitStack() as exits:
        try:
            stack = Stack(exits)
            env["postgresql"] = _server_version(stack.infra.postgres_dsn)
            env["servers"] = ("embedded " + " and ".join(stack.infra.embedded)
                              if stack.infra.embedded else "from POSTGRES_DSN / NATS_URL")
            token = bearer_token()
            _, receiver_port = stack.receiver()  # stopped by the stack at the end
            settle_s = out.setdefault("settle_s", {})
            for name, fn, *a in (
                    ("intake", phase_intake, stack, args, token, receiver_port, out),
                    ("alone", phase_intake_alone, stack, args, token, out),
                    ("baseline", phase_baseline, stack, args, out),
                    ("e2e", phase_e2e, stack, args, token, receiver_port, out),
                    ("projection", phase_projection, stack, args, out),
                    ("audit", phase_measurements, "audit", stack, out),
                    ("timers", phase_measurements, "timers", stack, out),
                    ("notify", phase_notify, args, out)):
                if name in args.only:
                    # the plain endpoint inserts into intake's database, as intake did
                    keep = (out.get("intake_dsn"),) if name in ("alone", "baseline") else ()
                    settle_s[name] = round(stack.quiesce(keep), 1)
                phase(name, fn, *a)
        except KeyboardInterrupt:
            interrupted = True
            log("interrupted; stopping everything this run started")
        except Exception as exc:
            failures["setup"] = f"{type(exc).__name__}: {exc}"
            log(f"failed: {failures['setup']}; stopping everything this run started")
            traceback.print_exc()
        finally:
            log("cleaning up")
    env["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if out.get("settle_s"):
        env["settled before each phase (earlier phases' databases dropped, autovacuum done, "
            "checkpoint)"] = ", ".join(f"{k} {v} s" for k, v in out["settle_s"].items())
    rows = build_rows(out)
    print()
    print(report.plain_table(rows))
    print()
    if interrupted:
        print("bench interrupted; nothing written", file=sys.stderr)
        return 130
    sections = build_sections(out)
    if failures:
        sections.insert(0, ("Phases that failed", "\n".join(
            f"- **{k}**: `{v}`" for k, v in failures.items())))
        for k, v in failures.items():
            print(f"phase {k} failed: {v}", file=sys.stderr)
    if not args.no_write:
        path = report.write(env, rows, sections, time.monotonic() - started)
        print(f"written to {path.relative_to(REPO_ROOT)}")
    return 1 if failures else 0


def _server_version(dsn: str) -> str:
    import psycopg
    try:
        with psycopg.connect(dsn) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except Exception:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
