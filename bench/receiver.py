"""Webhook receiver standing in for the units' systems: records when each case's assignment
notice (the one routing triggers) first arrived, by wall clock. Runs as its own process:
`python -m bench.receiver PORT`.

POST anything -> 204, recording body["case_id"] when body["kind"] is an assignment notice (or
absent); GET /stats -> {"count": n, "posts": n, "kinds": {...}};
GET /dump -> {"<case_id>": <unix time of first arrival>, ...}. Loopback only.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

ASSIGNMENT_KINDS = {"assignment", "assignment_slip", None}
arrivals: dict[str, float] = {}
kinds: dict[str, int] = {}
posts = 0


def _response(status: str, body: bytes = b"", ctype: str = "application/json") -> bytes:
    if not body:
        return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global posts
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            now = time.time()
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            if method == b"POST":
                posts += 1
                try:
                    notice = json.loads(body)
                    case_id, kind = notice.get("case_id"), notice.get("kind")
                except (ValueError, AttributeError):
                    case_id = kind = None
                kinds[str(kind)] = kinds.get(str(kind), 0) + 1
                if case_id and kind in ASSIGNMENT_KINDS and case_id not in arrivals:
                    arrivals[case_id] = now
                writer.write(_response("204 No Content"))
            elif path == b"/stats":
                writer.write(_response("200 OK", json.dumps(
                    {"count": len(arrivals), "posts": posts, "kinds": kinds}).encode()))
            elif path == b"/dump":
                writer.write(_response("200 OK", json.dumps(arrivals).encode()))
            else:
                writer.write(_response("404 Not Found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1])))
