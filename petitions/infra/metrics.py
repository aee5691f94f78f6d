"""Prometheus metrics every service shares (each process serves its own registry on /metrics).

HTTP request rate and latency (`http_requests_total`, `http_request_seconds`) live in
petitions.infra.http beside the middleware that measures them.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- the event store ------------------------------------------------------------------------
EVENTS_APPENDED = Counter(
    "petitions_events_appended_total", "Events appended to the case store",
    ["service", "type"])

# Where a registration's time goes, the stages it waits in one after the other: a latency
# rise reads as slow screening (the statement that checks retries and open cases and takes
# the case number) or as appends queueing behind the append lock.
REGISTRATION_STAGE = Histogram(
    "petitions_registration_stage_seconds",
    "Time a registration spends in each stage: queued (waiting for its batch to start), "
    "screen (its batch's screening statement), commit (its batch's append transaction)",
    ["stage"], buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
COMMIT_BATCH_CASES = Histogram(
    "petitions_group_commit_cases", "New cases appended per group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100))
SCREENING_BATCH_PETITIONS = Histogram(
    "petitions_screening_batch_petitions", "Petitions screened per screening statement",
    buckets=(1, 2, 4, 8, 16, 32, 64, 100))

# -- the relay ------------------------------------------------------------------------------
RELAY_LAG = Gauge(
    "petitions_relay_lag_events",
    "Events committed to the store but not yet published to NATS "
    "(store head notification id minus the relay's published position)",
    ["service"])
RELAY_LEADER = Gauge(
    "petitions_relay_leader", "1 while this process holds the relay lock and publishes",
    ["service"])
RELAY_PUBLISHED = Counter(
    "petitions_relay_published_total", "Events published to NATS by this process's relay",
    ["service"])

# -- consumers ------------------------------------------------------------------------------
CONSUMER_PENDING = Gauge(
    "petitions_consumer_pending_messages",
    "Messages in the stream not yet delivered to the durable consumer (JetStream num_pending)",
    ["service", "durable"])
CONSUMER_ACK_PENDING = Gauge(
    "petitions_consumer_ack_pending_messages",
    "Messages delivered to the durable consumer but not yet acknowledged (num_ack_pending)",
    ["service", "durable"])
MESSAGES_HANDLED = Counter(
    "petitions_messages_handled_total",
    "Bus messages handled, by outcome: ok (acked), retry (nak'd for redelivery), "
    "dropped (unparseable, terminated)",
    ["service", "durable", "outcome"])

# -- deadlines (set by the deadlines service) -------------------------------------------------
TIMERS_DUE = Gauge(
    "petitions_timers_due",
    "Running statutory deadline timers whose due date has not passed yet", ["clock"])
TIMERS_OVERDUE = Gauge(
    "petitions_timers_overdue",
    "Running statutory deadline timers past their due date", ["clock"])

# -- notices (counted by the notify service) --------------------------------------------------
NOTICES_DELIVERED = Counter(
    "petitions_notices_delivered_total", "Notices delivered", ["kind", "channel"])
NOTICES_FAILED = Counter(
    "petitions_notices_failed_total", "Failed notice delivery attempts", ["kind", "channel"])
NOTICES_DEAD_LETTERED = Counter(
    "petitions_notices_dead_lettered_total",
    "Notices given up after their last delivery attempt", ["kind", "channel"])

# -- gRPC (intake) ----------------------------------------------------------------------------
GRPC_REQUESTS = Counter(
    "grpc_server_requests_total", "gRPC calls", ["service", "method", "code"])
GRPC_LATENCY = Histogram(
    "grpc_server_request_seconds", "gRPC call latency", ["service", "method"])
