"""uvicorn's HTTP/1.1 protocol, writing a response's head and body to the socket together.

uvicorn writes each ASGI message as it comes: the head (`http.response.start`), then the body.
A socket write is a system call, and on loopback also the kernel's delivery to the reader: for
a short JSON answer, the head's write cost about as much as the body's, some 3% of a busy
service's CPU. The body follows the head in the same step of the same task (nothing in
between waits), so holding the head until the next write costs no latency; a head whose body
does not come at once (a streamed response) is written at the end of the loop's iteration.
"""
from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_END = b"\r\n\r\n"


class HeadHeldTransport:
    """A transport whose write ending a header block waits for the next write, or for the
    end of the loop iteration, whichever comes first. Everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.endswith(HEAD_END):
            self._held = data
            self._loop.call_soon(self._release)
            return
        self._transport.write(data)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `HeadHeldTransport` (`uvicorn.Config(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadHeldTransport(transport, self.loop))  # type: ignore[arg-type]
