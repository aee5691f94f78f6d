"""Pulling a durable JetStream consumer's messages without waiting to fill a batch.

nats-py's `PullSubscription.fetch(batch, timeout)` can hold messages back: when its first,
immediate request comes back empty (an idle consumer, or a status such as another replica's
request pending), it sends a waiting request for the whole batch and then keeps collecting
until the batch is full or the timeout is over. A message arriving at a quiet moment then
waits for up to `batch` more, or the full timeout: with two notify replicas at 1,000 events
a second, one fetch in fifty held its messages for ~440 ms. It also awaits a task per
message.

`Puller` asks the server only for what it has (`no_wait`), and when it has nothing, waits
for the first message alone and then takes what came with it. Messages arrive through one
callback subscription on a private inbox; they are ordinary JetStream messages (ack, nak and
term work as on those `fetch` returns).

The wire protocol is JetStream's documented pull API: a request to
`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with `{"batch", "no_wait", "expires"}`,
answered on the reply inbox by messages and, when a request ends short of its batch, a
status message (404 no messages, 408 request expired, 409 ...).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

log = logging.getLogger(__name__)

API_PREFIX = "$JS.API"
_STATUS = "Status"
_HEARTBEAT = "100"
# A request that ended with nothing because there was nothing: 404 (no messages), 408 (its
# wait ran out); or no answer at all (a lost connection, already waited for).
_NO_ANSWER = "no answer"
_ENDED_EMPTY = ("404", "408", _NO_ANSWER)
# After a refusal (409: the consumer deleted, too many waiting requests...), before the next.
_REFUSED_PAUSE_S = 0.5
# How long to wait for the answer to a request the server answers at once: only a lost
# connection makes it take longer (the request is then gone, and so is its answer).
_ANSWER_S = 5.0


class Puller:
    """Fetches from one durable pull consumer; one fetch at a time per puller."""

    def __init__(self, nc: Any, stream: str, durable: str, api_prefix: str = API_PREFIX
                 ) -> None:
        self.nc = nc
        self.next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.inbox = nc.new_inbox()
        # Messages and statuses in arrival order; messages of a request given up on (a lost
        # connection, a cancelled fetch) stay here and open the next fetch.
        self._arrived: deque[Any] = deque()
        self._signal = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> Puller:
        self._sub = await self.nc.subscribe(self.inbox, cb=self._on_message)
        return self

    async def stop(self) -> None:
        """Unsubscribe; messages fetched and not acked go back to the stream after ack_wait."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        self._arrived.append(msg)
        self._signal.set()

    async def fetch(self, batch: int, wait: float) -> list[Any]:
        """Up to `batch` messages: those the consumer has now; when it has none, the first to
        arrive within `wait` seconds and whatever is there by then. Never waits for more once
        it holds one. [] when nothing came."""
        msgs = self._take_arrived(batch)
        if msgs:
            return msgs
        msgs, _ = await self._request(batch, no_wait=True)
        if msgs:
            return msgs
        first, status = await self._request(1, expires=wait)
        if not first:
            if status not in _ENDED_EMPTY:
                # refused (the consumer is gone, a leader is being elected...): not at once
                log.warning("pull request refused", extra={"status": status,
                                                           "subject": self.next_subject})
                await asyncio.sleep(min(wait, _REFUSED_PAUSE_S))
            return []
        if batch == 1:
            return first
        more, _ = await self._request(batch - 1, no_wait=True)
        return first + more

    async def take(self, batch: int) -> list[Any]:
        """Up to `batch` messages the consumer has now; never waits for one to arrive."""
        msgs = self._take_arrived(batch)
        if len(msgs) < batch:
            more, _ = await self._request(batch - len(msgs), no_wait=True)
            msgs += more
        return msgs

    def _take_arrived(self, limit: int) -> list[Any]:
        """Messages already here (late answers to an earlier request); statuses dropped."""
        out = []
        while self._arrived and len(out) < limit:
            msg = self._arrived.popleft()
            if _status(msg) is None:
                out.append(msg)
        return out

    async def _request(self, batch: int, *, no_wait: bool = False,
                       expires: float | None = None) -> tuple[list[Any], str | None]:
        """Send one pull request and collect its answer: `batch` messages, or fewer and the
        status that ends it (None: the batch was filled, or no answer came)."""
        body: dict[str, Any] = {"batch": batch}
        if no_wait:
            body["no_wait"] = True
        if expires is not None:
            body["expires"] = int(expires * 1e9)
        await self.nc.publish(self.next_subject, json.dumps(body).encode(), reply=self.inbox)
        # the server ends a waiting request itself when it expires; wait a little longer
        give_up = asyncio.get_running_loop().time() + (expires or 0.0) + _ANSWER_S
        out: list[Any] = []
        while len(out) < batch:
            if not self._arrived:
                remaining = give_up - asyncio.get_running_loop().time()
                if remaining <= 0 or not await self._wait_signal(remaining):
                    log.warning("no answer to a pull request", extra={"subject": self.next_subject})
                    return out, _NO_ANSWER
                continue
            msg = self._arrived.popleft()
            status = _status(msg)
            if status is None:
                out.append(msg)
            elif status != _HEARTBEAT:
                return out, status  # this request is over (no more messages, expired, refused)
        return out, None

    async def _wait_signal(self, timeout: float) -> bool:
        self._signal.clear()
        if self._arrived:
            return True
        try:
            await asyncio.wait_for(self._signal.wait(), timeout)
        except TimeoutError:
            return False
        return True


def _status(msg: Any) -> str | None:
    """The status code of a status message (no payload, a Status header), else None."""
    headers = msg.headers
    if not headers or msg.data:
        return None
    return headers.get(_STATUS)
