"""A small HTTP/1.1 client with keep-alive connection pools, for webhook POSTs.

httpx costs a few milliseconds of CPU per request here, which caps one notify process at a
few hundred webhooks a second; webhooks need only POST, a status and a short body. Speaks
plain HTTP and HTTPS; reads Content-Length, chunked and close-delimited bodies; a connection
that the server closed while idle is replaced once (the POST carries its idempotency key, so
a repeat is harmless anyway).
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpClientError(Exception):
    pass


@dataclass
class Response:
    status_code: int
    content: bytes


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Http11Client:
    def __init__(self, timeout: float = 5.0, max_per_host: int = 64,
                 max_body: int = 1 << 20) -> None:
        self.timeout = timeout
        self.max_per_host = max_per_host
        self.max_body = max_body
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._limits: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(self, url: str, content: bytes, headers: dict[str, str]) -> Response:
        """POST; with tracing on, a CLIENT span and traceparent in the request headers (as
        `petitions.infra.tracing.TracingTransport` does for httpx)."""
        from petitions.infra import tracing

        if not tracing.tracing_enabled():
            return await self._post(url, content, headers)
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        parts = urlsplit(url)
        attributes = {"http.request.method": "POST", "server.address": parts.hostname or "",
                      "url.path": parts.path}
        with tracing.TRACER.start_as_current_span("POST", kind=SpanKind.CLIENT,
                                                  attributes=attributes) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            response = await self._post(url, content, {**headers, **carrier})
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR))
            return response

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpClientError(f"unsupported URL scheme {parts.scheme!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}",
                 f"Content-Length: {len(content)}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in
                  ("host", "content-length", "connection")]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + content
        limit = self._limits.setdefault(key, asyncio.Semaphore(self.max_per_host))
        async with limit:
            try:
                # a deadline on this task, not wait_for's extra task per request
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(key, request)
            except TimeoutError as exc:
                raise HttpClientError(f"timed out after {self.timeout}s") from exc
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                raise HttpClientError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, key: tuple[str, str, int], request: bytes) -> Response:
        idle = self._idle.setdefault(key, [])
        while idle:
            conn = idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():
                conn[1].close()
                continue
            try:
                return await self._roundtrip(key, conn, request)
            except (OSError, asyncio.IncompleteReadError) as exc:
                conn[1].close()
                if getattr(exc, "partial", b""):
                    raise
                # the server closed it while it sat idle: once more on a fresh connection
                break
            except BaseException:
                conn[1].close()
                raise
        conn = await self._connect(key)
        try:
            return await self._roundtrip(key, conn, request)
        except BaseException:
            conn[1].close()
            raise

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        return await asyncio.open_connection(host, port, ssl=context,
                                             server_hostname=host if context else None)

    async def _roundtrip(self, key: tuple[str, str, int], conn: _Conn,
                         request: bytes) -> Response:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].split(b"\r\n")
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ValueError("not an HTTP/1.x response")
            status = int(parts[1])
            if 100 <= status < 200:
                continue  # 100 Continue and friends
            break
        headers: dict[bytes, bytes] = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get(b"connection", b"").lower() != b"close" and parts[0] != b"HTTP/1.0"
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = await self._chunked(reader)
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length > self.max_body:
                raise ValueError("response body too large")
            body = await reader.readexactly(length)
        elif status in (204, 304):
            body = b""
        else:
            body = await reader.read(self.max_body)
            keep = False
        if keep:
            self._idle.setdefault(key, []).append(conn)
        else:
            writer.close()
        return Response(status, body)

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        out = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(out) > self.max_body:
                raise ValueError("response body too large")

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()
