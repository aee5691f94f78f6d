"""HTTP load generator: run as its own process (`python -m bench.load ...`), prints one JSON result.

Raw asyncio streams over persistent HTTP/1.1 connections, with the requests serialised once up
front, so the generator costs little CPU per request. Two modes:

- closed: `--concurrency` clients, each sending its next request when the previous one is
  answered, for `--duration` seconds or `--max-requests` in all;
- open: a fixed arrival rate (`--rate` per second) for `--duration` seconds over a pool of
  `--concurrency` connections. Latency counts from the request's *scheduled* time, so a stall
  is not hidden by requests that were never sent (no coordinated omission).

`--warmup` seconds of unmeasured load come first: flat out in closed mode, at the run's own
rate on the run's own connections in open mode.

Only ever talks to 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"

SUBJECTS = ("land", "labour", "housing", "demolition", "consumer")
DIVISIONS = ("330102", "330106", "330108")


ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(serial: int) -> str:
    """A well-formed 18-digit resident identity number (GB 11643 check digit), unique per
    serial, so that every request is a different petitioner."""
    first = f"33010619{serial % 10**9:09d}"
    check = "10X98765432"[sum(int(d) * w for d, w in zip(first, ID_WEIGHTS, strict=True)) % 11]
    return first + check


class Petitions:
    """Request n: one of a few realistic petition shapes, with its own petitioner and its own
    wording (a serial in the text), so that none is matched to an earlier case as a repeat or
    duplicate: every request registers a new case, as most real submissions do. The JSON is
    serialised once per shape; a request only splices in the serial."""

    SERIAL, IDNUM = "__SERIAL__", "__IDNUM__"

    SENTENCE = "村里重新分配宅基地时漏掉了我家，多次向村委会反映无果，请求依法处理。"

    def __init__(self, port: int, path: str, token: str | None, seed: int, shapes: int = 15,
                 letter_chars: int = 0):
        """`letter_chars`: make each letter about that long (the sentence repeated), as a
        written letter is; by default one sentence, as a short online form is."""
        self.seed = seed
        repeats = max(1, round(letter_chars / len(self.SENTENCE)))
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                     f"Content-Type: application/json\r\n{auth}Content-Length: ").encode()
        self.templates: list[list[bytes]] = []
        for i in range(shapes):
            body = {
                "channel": ("letter", "visit", "online", "phone")[i % 4],
                "category": "appeal" if i % 5 else "suggestion",
                "division": DIVISIONS[i % len(DIVISIONS)],
                "subject": SUBJECTS[i % len(SUBJECTS)],
                "content": self.SENTENCE * repeats + f"（登记样本 {self.SERIAL}）",
                "requests": ["重新丈量并登记", "书面答复处理结果"],
                "people_count": 1 + i % 3,
                "petitioner": {"name": "张三", "id_number": self.IDNUM,
                               "phone": "13800000000", "address": "杭州市西湖区某村"},
            }
            raw = json.dumps(body, ensure_ascii=False).encode()
            a, rest = raw.split(self.SERIAL.encode())
            b, c = rest.split(self.IDNUM.encode())
            self.templates.append([a, b, c])

    def request(self, n: int) -> bytes:
        serial = self.seed * 1_000_000 + n
        a, b, c = self.templates[n % len(self.templates)]
        body = b"".join((a, str(serial).encode(), b, id_number(serial).encode(), c))
        return b"".join((self.head, str(len(body)).encode(), b"\r\n\r\n", body))


class Conn:
    """One keep-alive HTTP/1.1 connection; `call` sends a prepared request, reads the answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def call(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        i = lower.find(b"\r\ncontent-length:")
        length = int(head[i + 17:head.index(b"\r\n", i + 2)]) if i >= 0 else 0
        body = await self.reader.readexactly(length) if length else b""
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Result:
    latencies: array = field(default_factory=lambda: array("d"))  # seconds
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    records: list[tuple[str, float, float]] = field(default_factory=list)  # case_id, t_201, lat

    def add(self, status: int, latency: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.latencies.append(latency)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


def percentile(sorted_values: list[float] | array, q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def _record(result: Result, body: bytes, latency: float) -> None:
    try:
        case_id = json.loads(body)["case_id"]
    except (ValueError, KeyError):
        return
    result.records.append((case_id, time.time(), latency))


async def closed_loop(port: int, requests: Petitions, concurrency: int, duration: float,
                      max_requests: int, record: bool) -> tuple[Result, float]:
    result = Result()
    conns = [Conn(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    sent = 0
    start = time.perf_counter()
    make = requests.request
    stop_at = start + duration

    async def client(i: int, conn: Conn) -> None:
        nonlocal sent
        perf = time.perf_counter
        while sent < max_requests:
            t0 = perf()
            if t0 >= stop_at:
                return
            n = sent
            sent += 1
            try:
                status, body = await conn.call(make(n))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.error(exc)
                conn.close()
                await asyncio.sleep(0.01)
                continue
            latency = perf() - t0
            result.add(status, latency)
            if record and status == 201:
                _record(result, body, latency)

    await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return result, elapsed


async def open_loop(port: int, requests: Petitions, connections: int, rate: float,
                    duration: float, record: bool, warmup: float = 0.0) -> tuple[Result, float]:
    """`warmup` seconds at the same rate on the same connections come first, unmeasured:
    the requests scheduled in them are sent but not counted."""
    result = Result()
    idle: asyncio.Queue[Conn] = asyncio.Queue()
    conns = [Conn(port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    for c in conns:
        idle.put_nowait(c)
    first_measured = int(rate * warmup)
    total = first_measured + int(rate * duration)
    perf = time.perf_counter
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, scheduled: float) -> None:
        conn = await idle.get()
        try:
            status, body = await conn.call(requests.request(n))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if n >= first_measured:
                result.error(exc)
            conn.close()
            return
        finally:
            idle.put_nowait(conn)
        if n < first_measured:
            return
        latency = perf() - scheduled
        result.add(status, latency)
        if record and status == 201:
            _record(result, body, latency)

    start = perf()
    n = 0
    while n < total:
        now = perf()
        due = min(total, int((now - start) * rate) + 1)
        while n < due:
            task = asyncio.create_task(one(n, start + n / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        next_at = start + n / rate
        await asyncio.sleep(max(0.0, next_at - perf()))
    # let the last requests finish (bounded: a server far behind the offered rate still has
    # a queue here; what is not answered by then is reported as not completed)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    result.errors["not completed"] = len(tasks) if tasks else 0
    if not result.errors["not completed"]:
        del result.errors["not completed"]
    elapsed = perf() - start - first_measured / rate
    for c in conns:
        c.close()
    return result, elapsed


def summarise(result: Result, elapsed: float, cpu: float) -> dict[str, Any]:
    lat = sorted(result.latencies)
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    ok = len(lat)
    return {
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "errors": result.errors,
        "elapsed_s": round(elapsed, 3),
        "throughput": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": ms(percentile(lat, 50)),
        "p90_ms": ms(percentile(lat, 90)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "generator_cpu_cores": round(cpu / elapsed, 2) if elapsed > 0 else 0.0,
        "records": result.records,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/petitions")
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--max-requests", type=int, default=500_000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--token", default=None)
    p.add_argument("--record", action="store_true", help="return (case_id, time of 201) pairs")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds of unmeasured load first")
    p.add_argument("--seed", type=int, default=0, help="0-999: keeps runs' petitions distinct")
    p.add_argument("--letter-chars", type=int, default=0,
                   help="letters of about this many characters (default: one sentence)")
    a = p.parse_args(argv)
    if (a.duration > 120 or a.max_requests > 900_000 or a.rate > 50_000
            or not 0 <= a.seed < 500 or not 0 <= a.letter_chars <= 20_000):
        p.error("refusing an unbounded-looking run")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    requests = Petitions(a.port, a.path, a.token, a.seed, letter_chars=a.letter_chars)
    warm = Petitions(a.port, a.path, a.token, (a.seed + 500) % 1000,
                     letter_chars=a.letter_chars)

    async def go() -> tuple[Result, float]:
        if a.mode == "open":  # warmed up at its own rate, not flat out
            return await open_loop(a.port, requests, a.concurrency, a.rate, a.duration,
                                   a.record, a.warmup)
        if a.warmup > 0:
            await closed_loop(a.port, warm, a.concurrency, a.warmup, a.max_requests, False)
        return await closed_loop(a.port, requests, a.concurrency, a.duration, a.max_requests,
                                 a.record)

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    result, elapsed = asyncio.run(go())
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    # the warm-up's CPU is not in the window; scale by the measured window only
    if a.warmup > 0:
        cpu *= elapsed / (elapsed + a.warmup)
    json.dump(summarise(result, elapsed, cpu), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
