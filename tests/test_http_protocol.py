"""The services' HTTP protocol writes a response's head with its body, and changes nothing a
client can see: keep-alive, streamed bodies, bodiless answers and closes come out whole."""
from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response, StreamingResponse

from petitions.infra.http_protocol import HeadHeldTransport, HeadWithBodyProtocol


class Recorded:
    """The transport methods HeadHeldTransport calls, noting the writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n"


async def test_a_head_and_the_body_after_it_are_one_write() -> None:
    raw = Recorded()
    held = HeadHeldTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(HEAD)
    assert raw.writes == [] and held.get_write_buffer_size() == len(HEAD)
    held.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the release scheduled for the head finds nothing held
    assert raw.writes == [HEAD + b"{}"]
    assert held.get_extra_info("peername") == "info:peername"


async def test_a_head_alone_goes_out_at_the_end_of_the_loop_iteration() -> None:
    raw = Recorded()
    held = HeadHeldTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    held.write(HEAD)
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]
    held.write(b"body")  # not a head: straight through
    assert raw.writes == [HEAD, b"body"]


async def test_close_writes_what_is_held_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closing, aborting = Recorded(), Recorded()
    held = HeadHeldTransport(closing, loop)  # type: ignore[arg-type]
    held.write(HEAD)
    held.close()
    assert closing.writes == [HEAD] and closing.closed
    held = HeadHeldTransport(aborting, loop)  # type: ignore[arg-type]
    held.write(HEAD)
    held.abort()
    await asyncio.sleep(0)
    assert aborting.writes == [] and aborting.aborted


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/json")
    async def json_answer(n: int) -> JSONResponse:
        return JSONResponse({"n": n}, status_code=201)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                await asyncio.sleep(0.01)
                yield part
        return StreamingResponse(parts(), media_type="text/plain")

    @app.delete("/nothing")
    async def nothing() -> Response:
        return Response(status_code=204)

    return app


@pytest.fixture
async def served() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(_app(), log_config=None, lifespan="off", http=HeadWithBodyProtocol)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def test_answers_come_out_whole_over_one_kept_alive_connection(served: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}") as client:
        for n in range(5):
            answer = await client.post("/json", params={"n": n})
            assert (answer.status_code, answer.json()) == (201, {"n": n})
        streamed = await client.get("/stream")
        assert (streamed.status_code, streamed.text) == (200, "one,two,three")
        empty = await client.delete("/nothing")
        assert (empty.status_code, empty.content) == (204, b"")
        closed = await client.post("/json", params={"n": 9}, headers={"connection": "close"})
        assert (closed.status_code, closed.json()) == (201, {"n": 9})


async def test_pipelined_requests_are_answered_in_order(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    request = "POST /json?n={} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    writer.write(b"".join(request.format(n).encode() for n in range(3)))
    await writer.drain()
    for n in range(3):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 201")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        assert await reader.readexactly(length) == b'{"n":%d}' % n
    writer.close()
    await writer.wait_closed()
