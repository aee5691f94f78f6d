"""Small pieces of plain ASGI the HTTP layers share."""
from __future__ import annotations

from starlette.types import Message, Send


class StatusNoted:
    """A `send` that notes the response's status as it passes (500 until one is sent: a
    request that ends in an exception answers 500)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)
