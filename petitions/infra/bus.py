"""NATS JetStream: the stream, publishing with de-duplication, and durable pull consumers."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError

from petitions.infra import jsoncodec, tracing
from petitions.infra.logs import case_bound
from petitions.infra.metrics import MESSAGES_HANDLED
from petitions.infra.pull import Puller

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BusMessage:
    """A case event as received from the bus: its ids and type (`EventNotice`); the consumer
    loads the case itself from the store."""

    event_id: str
    case_id: str
    version: int
    type: str
    deliveries: int

    @classmethod
    def parse(cls, body: bytes, deliveries: int) -> BusMessage:
        # Other keys are ignored: messages published with the event's data (before notices
        # carried none) may still be in the stream.
        m = jsoncodec.loads(body)
        return cls(m["event_id"], m["case_id"], int(m["version"]), m["type"], deliveries)


class Bus:
    def __init__(self, nc: NATS, stream: str, prefix: str, replicas: int = 1) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream = stream
        self.prefix = prefix
        self.replicas = replicas

    @classmethod
    async def connect(cls, url: str, stream: str, prefix: str, name: str,
                      replicas: int = 1) -> Bus:
        # The first connection gives up after a couple of tries so that the caller's backoff
        # (runtime.with_backoff) paces the wait for a server that is not up yet; once
        # connected, the client reconnects for ever by itself.
        closing = asyncio.Event()

        async def on_disconnected() -> None:
            if not closing.is_set():
                log.warning("nats: disconnected; reconnecting")

        nc = await nats.connect(
            url, name=name, max_reconnect_attempts=1, reconnect_time_wait=0.5,
            connect_timeout=3, error_cb=_on_error, disconnected_cb=on_disconnected,
            reconnected_cb=_on_reconnected,
        )
        nc.options["max_reconnect_attempts"] = -1
        bus = cls(nc, stream, prefix, replicas)
        bus._closing = closing
        return bus

    def subject(self, event_type: str) -> str:
        return f"{self.prefix}.case.{event_type}"

    async def ensure_stream(self) -> None:
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.>"],
            # Republishes inside this window are dropped by Nats-Msg-Id; consumers are
            # idempotent anyway for anything older.
            duplicate_window=600.0,
            # 3 on a JetStream cluster so the stream survives a node (NATS_STREAM_REPLICAS).
            num_replicas=self.replicas,
        )
        try:
            await self.js.stream_info(self.stream)
            await self.js.update_stream(config)
        except NotFoundError:
            await self.js.add_stream(config)

    async def publish(self, event_type: str, msg_id: str, body: dict[str, Any],
                      headers: dict[str, str] | None = None) -> bool:
        """Publish once; returns False when JetStream dropped it as a duplicate."""
        ack = await self.js.publish(
            self.subject(event_type),
            _encode(body),
            stream=self.stream,
            headers={"Nats-Msg-Id": msg_id, **(headers or {})},
        )
        return not ack.duplicate

    async def publish_all(self, messages: Sequence[Outgoing], timeout: float = 10.0) -> None:
        """Publish every message without waiting for each one's ack in turn, then wait for
        them all (one task for the lot instead of a request per message); raises the first
        failure once every ack has come in or the time is up. A duplicate is acked too."""
        acks = []
        for event_type, msg_id, body, headers in messages:
            acks.append(await self.js.publish_async(
                self.subject(event_type), _encode(body), stream=self.stream,
                headers={"Nats-Msg-Id": msg_id, **headers}))
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*acks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self, timeout: float = 5.0) -> None:
        """Drain (finish pending publishes and acks), but never hang a shutdown on it."""
        if self.nc.is_closed:
            return
        closing: asyncio.Event | None = getattr(self, "_closing", None)
        if closing is not None:
            closing.set()
        try:
            await asyncio.wait_for(self.nc.drain(), timeout)
        except (TimeoutError, nats.errors.Error):
            log.warning("nats drain timed out; closing")
            await self.nc.close()

    @property
    def connected(self) -> bool:
        return self.nc.is_connected


# (event type, Nats-Msg-Id, body, headers)
Outgoing = tuple[str, str, dict[str, Any], dict[str, str]]


def _encode(body: dict[str, Any]) -> bytes:
    """A message body as UTF-8 JSON; datetimes written by str() as they always were."""
    return jsoncodec.dumps(body, default=str, datetimes_by_default=True)


async def _on_error(exc: Exception) -> None:
    log.warning("nats: %s: %s", type(exc).__name__, exc)


async def _on_reconnected() -> None:
    log.info("nats: reconnected")


Handler = Callable[[BusMessage], Awaitable[None]]


class Consumer:
    """A durable pull consumer with explicit acks: a message is acked only after its effect
    is committed, so a crash means redelivery, and handlers are idempotent."""

    def __init__(self, bus: Bus, durable: str, event_types: list[str], handler: Handler,
                 *, max_deliver: int = 50, ack_wait: float = 60.0, batch: int = 64,
                 service: str = "") -> None:
        self.bus = bus
        self.service = service or durable
        self.durable = durable
        self.event_types = event_types
        self.handler = handler
        self.max_deliver = max_deliver
        self.ack_wait = ack_wait
        self.batch = batch
        self.handled = 0

    async def _subscribe(self) -> Puller:
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            filter_subjects=[self.bus.subject(t) for t in self.event_types],
            max_ack_pending=1000,
        )
        return await self._bind(config)

    async def _bind(self, config: ConsumerConfig) -> Puller:
        try:
            await self.bus.js.consumer_info(self.bus.stream, self.durable)
        except NotFoundError:
            await self.bus.js.add_consumer(self.bus.stream, config)
        return await Puller(self.bus.nc, self.bus.stream, self.durable).start()

    async def run(self, stopping: asyncio.Event) -> None:
        puller = await self._subscribe()
        try:
            await self._pull(puller, stopping)
        finally:
            # Unacked messages go back to the stream for the next consumer instance.
            await puller.stop()

    async def _pull(self, puller: Puller, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            msgs = await self._fetch(puller)
            await asyncio.gather(*(self._handle(m) for m in msgs))

    async def _fetch(self, puller: Puller) -> list[Any]:
        """The next messages, up to a batch, as soon as there is one; none when nothing came
        within a second."""
        try:
            return await puller.fetch(self.batch, wait=1.0)
        except Exception:  # connection trouble: the client reconnects by itself
            log.warning("fetch failed; retrying", exc_info=True)
            await asyncio.sleep(0.5)
            return []

    async def _parse(self, msg: Any) -> BusMessage | None:
        """The message; None when it cannot be parsed, and then it is dropped for good (a
        redelivery would not parse either)."""
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        try:
            return BusMessage.parse(msg.data, deliveries)
        except (ValueError, KeyError):
            log.error("unparseable message dropped", extra={"subject": msg.subject})
            MESSAGES_HANDLED.labels(self.service, self.durable, "dropped").inc()
            await msg.term()
            return None

    def _span(self, msg: Any, message: BusMessage, deliveries: int) -> Any:
        """The CONSUMER span, when `tracing.worth_a_span` (every message has Nats-Msg-Id,
        which is no trace context)."""
        if not tracing.worth_a_span(msg.headers or ()):
            return contextlib.nullcontext()
        return tracing.consuming(self.durable, msg.subject, msg.headers, message.type,
                                 message.event_id, message.case_id, deliveries)

    async def _handle(self, msg: Any) -> None:
        message = await self._parse(msg)
        if message is None:
            return
        deliveries = message.deliveries
        # The handler runs in a span continuing the trace in the message headers (the one
        # that appended the event), with the case named on every log line it writes.
        with case_bound(message.case_id), self._span(msg, message, deliveries):
            try:
                await self.handler(message)
            except Exception as exc:
                tracing.mark_failed(exc)
                delay = retry_delay(deliveries)
                log.warning("handler failed; redelivery in %.1fs", delay,
                            extra={"event_id": message.event_id, "consumer": self.durable},
                            exc_info=True)
                MESSAGES_HANDLED.labels(self.service, self.durable, "retry").inc()
                await msg.nak(delay=delay)
                return
            await msg.ack()
        MESSAGES_HANDLED.labels(self.service, self.durable, "ok").inc()
        self.handled += 1


def retry_delay(deliveries: int, base: float = 0.2, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** min(deliveries, 16)))
