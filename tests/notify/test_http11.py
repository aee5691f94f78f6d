"""The webhook HTTP/1.1 client against servers that answer in every way HTTP allows."""
from __future__ import annotations

import asyncio

import pytest

from services.notify.http11 import Http11Client, HttpClientError

RESPONSES = {
    b"/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"/chunked": b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
    b"/continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"/old": b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    b"/close": b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
}


async def serve(connections: list[int], close_after_first: bool = False):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1]
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                await reader.readexactly(length)
                writer.write(RESPONSES[path])
                await writer.drain()
                if path in (b"/old", b"/close") or close_after_first:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_bodies_keep_alive_and_reconnects():
    connections: list[int] = []
    server = await serve(connections)
    port = server.sockets[0].getsockname()[1]
    client = Http11Client(timeout=2)
    base = f"http://127.0.0.1:{port}"
    try:
        r = await client.post(f"{base}/length", b"{}", {"Idempotency-Key": "k"})
        assert (r.status_code, r.content) == (200, b"hello")
        r = await client.post(f"{base}/chunked", b"{}", {})
        assert (r.status_code, r.content) == (201, b"hello")
        r = await client.post(f"{base}/continue", b"{}", {})
        assert r.status_code == 204
        assert len(connections) == 1  # all on one kept-alive connection
        r = await client.post(f"{base}/old", b"{}", {})
        assert (r.status_code, r.content) == (200, b"until close")
        r = await client.post(f"{base}/close", b"{}", {})
        assert r.status_code == 503
        r = await client.post(f"{base}/length", b"{}", {})
        assert r.status_code == 200 and len(connections) == 3
    finally:
        await client.aclose()
        server.close()


async def test_a_connection_closed_while_idle_is_replaced():
    connections: list[int] = []
    server = await serve(connections, close_after_first=True)
    port = server.sockets[0].getsockname()[1]
    client = Http11Client(timeout=2)
    try:
        for _ in range(3):
            r = await client.post(f"http://127.0.0.1:{port}/length", b"{}", {})
            assert r.status_code == 200
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        server.close()


async def test_refused_and_slow_servers_raise():
    client = Http11Client(timeout=0.3)

    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HttpClientError, match="timed out"):
            await client.post(f"http://127.0.0.1:{port}/", b"{}", {})
    finally:
        server.close()
    with pytest.raises(HttpClientError):
        await client.post(f"http://127.0.0.1:{port}/", b"{}", {})
    with pytest.raises(HttpClientError):
        await client.post("ftp://example/", b"", {})
