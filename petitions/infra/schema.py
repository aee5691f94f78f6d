"""Versioned, idempotent schema migrations (run once before the services start)."""
from __future__ import annotations

import logging

import psycopg

from petitions.infra.store import CaseStore

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 727_100_001
# The transaction-level advisory lock every append takes turns on (migration 18).
APPEND_LOCK_KEY = 727_100_004


def _append_prologue(take_turns: str) -> str:
    """How every version of `cases_append` begins: the trace context rows, then the statement
    that makes appends take turns, and the NOTIFY."""
    return """BEGIN
    IF coalesce(cardinality(trace_ids), 0) > 0 THEN
        INSERT INTO event_trace_context (originator_id, originator_version, traceparent)
        SELECT * FROM unnest(trace_ids, trace_versions, traceparents)
        ON CONFLICT (originator_id, originator_version)
        DO UPDATE SET traceparent = EXCLUDED.traceparent;
    END IF;
    IF lock_timeout_s > 0 THEN
        PERFORM set_config('lock_timeout', lock_timeout_s || 's', true);
    END IF;
    """ + take_turns + """
    NOTIFY cases_events;
"""


# Migrations 8 and 10 took turns on the table's lock; migration 18 on the append lock.
_APPEND_PROLOGUE = _append_prologue("LOCK TABLE cases_events IN EXCLUSIVE MODE;")
_APPEND_PROLOGUE_ADVISORY = _append_prologue(f"PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});")

# Migration 10's append (events as column arrays), which migration 18 redefines with another
# way of taking turns.
_APPEND_BY_COLUMNS_SIGNATURE = """CREATE OR REPLACE FUNCTION cases_append(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    trace_ids uuid[], trace_versions bigint[], traceparents text[], lock_timeout_s int)
RETURNS SETOF bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
"""
_APPEND_BY_COLUMNS_BODY = """    RETURN QUERY
        WITH batch AS (
            SELECT * FROM unnest(ids, versions, topics, states) WITH ORDINALITY
                AS e(originator_id, originator_version, topic, state, n)),
        starts AS (
            -- Where each case's chain goes on from: 32 zero bytes before version 1, else the
            -- stored predecessor's hash; NULL leaves the case's rows to the trigger.
            SELECT b.originator_id,
                   CASE WHEN max(b.originator_version) - min(b.originator_version) + 1
                             <> count(*) THEN NULL
                        WHEN min(b.originator_version) = 1
                            THEN '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                        ELSE (SELECT p.chain_hash FROM cases_events p
                               WHERE p.originator_id = b.originator_id
                                 AND p.originator_version = min(b.originator_version) - 1)
                   END AS prev
              FROM batch b GROUP BY b.originator_id),
        chained AS (
            SELECT b.*, case_chain_after(s.prev, case_event_piece(
                       b.originator_id, b.originator_version, b.topic, b.state))
                       OVER (PARTITION BY b.originator_id ORDER BY b.originator_version)
                       AS chain_hash
              FROM batch b JOIN starts s USING (originator_id)),
        inserted AS (
            INSERT INTO cases_events (originator_id, originator_version, topic, state,
                                      chain_hash)
            SELECT c.originator_id, c.originator_version, c.topic, c.state, c.chain_hash
              FROM chained c ORDER BY c.n  -- notification ids in the order given
            RETURNING notification_id, originator_id, originator_version, chain_hash),
        heads AS (
            -- Only ever moves forward, as in the trigger.
            INSERT INTO case_chain_heads AS h (case_id, version, chain_hash)
            SELECT DISTINCT ON (i.originator_id) i.originator_id, i.originator_version,
                   i.chain_hash
              FROM inserted i ORDER BY i.originator_id, i.originator_version DESC
            ON CONFLICT (case_id) DO UPDATE
                SET version = EXCLUDED.version, chain_hash = EXCLUDED.chain_hash
                WHERE h.version < EXCLUDED.version)
        SELECT i.notification_id FROM inserted i ORDER BY i.notification_id;
END
$fn$;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "case numbers, log positions, case summaries", """
CREATE TABLE IF NOT EXISTS case_numbers (
    county text NOT NULL,
    year int NOT NULL,
    last_seq int NOT NULL,
    PRIMARY KEY (county, year)
);
CREATE TABLE IF NOT EXISTS log_positions (
    reader text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS case_summaries (
    case_id uuid PRIMARY KEY,
    case_number text NOT NULL,
    division text NOT NULL,
    status text NOT NULL,
    category text NOT NULL,
    channel text NOT NULL,
    unit_id text,
    registered_at timestamptz NOT NULL,
    registered_position bigint NOT NULL,
    version int NOT NULL,
    summary jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS case_summaries_division_idx
    ON case_summaries (division, registered_position DESC);
CREATE INDEX IF NOT EXISTS case_summaries_status_idx
    ON case_summaries (status, registered_position DESC);
CREATE INDEX IF NOT EXISTS case_summaries_position_idx
    ON case_summaries (registered_position DESC);
"""),
    (2, "tamper-evident hash chain over each case's stored events", """
-- Each stored event carries chain_hash = sha256(prev || uuid bytes || int8 version (big
-- endian) || topic (UTF-8) || state), prev being the chain_hash of the case's previous version
-- (32 zero bytes for version 1). See petitions/domain/audit.py for the verifier.
ALTER TABLE cases_events ADD COLUMN IF NOT EXISTS chain_hash bytea;

-- The newest (version, hash) of each case, so that a removed tail is detectable too.
CREATE TABLE IF NOT EXISTS case_chain_heads (
    case_id uuid PRIMARY KEY,
    version bigint NOT NULL,
    chain_hash bytea NOT NULL
);

CREATE OR REPLACE FUNCTION case_event_piece(case_id uuid, version bigint, topic text, state bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT uuid_send(case_id) || int8send(version)
           || convert_to(coalesce(topic, ''), 'UTF8') || coalesce(state, ''::bytea)
$fn$;

CREATE OR REPLACE FUNCTION case_chain_step(prev bytea, piece bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT sha256(prev || piece)
$fn$;

-- case_chain(piece ORDER BY version): a case's chain hash over its pieces, as a running
-- aggregate (used for the backfill below).
CREATE OR REPLACE AGGREGATE case_chain(bytea) (
    SFUNC = case_chain_step, STYPE = bytea,
    INITCOND = '\\x0000000000000000000000000000000000000000000000000000000000000000'
);

CREATE OR REPLACE FUNCTION cases_events_chain() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
DECLARE
    prev bytea;
BEGIN
    IF NEW.originator_version = 1 THEN
        prev := decode(repeat('00', 32), 'hex');
    ELSE
        -- Race-free: the store takes an EXCLUSIVE lock on the table for every insert
        -- transaction, and the primary key admits one row per (case, version).
        SELECT e.chain_hash INTO prev FROM cases_events e
         WHERE e.originator_id = NEW.originator_id
           AND e.originator_version = NEW.originator_version - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'case %: version % has no hashed predecessor (version %)',
                NEW.originator_id, NEW.originator_version, NEW.originator_version - 1
                USING HINT = 'the case''s chain is broken; run the audit verifier';
        END IF;
    END IF;
    NEW.chain_hash := case_chain_step(
        prev, case_event_piece(NEW.originator_id, NEW.originator_version, NEW.topic, NEW.state));
    -- Only ever moves forward: a removed tail followed by a new append leaves a head that
    -- no longer matches, which the verifier reports.
    INSERT INTO case_chain_heads AS h (case_id, version, chain_hash)
    VALUES (NEW.originator_id, NEW.originator_version, NEW.chain_hash)
    ON CONFLICT (case_id) DO UPDATE
        SET version = EXCLUDED.version, chain_hash = EXCLUDED.chain_hash
        WHERE h.version < EXCLUDED.version;
    RETURN NEW;
END
$fn$;

DROP TRIGGER IF EXISTS cases_events_chain ON cases_events;
CREATE TRIGGER cases_events_chain BEFORE INSERT ON cases_events
    FOR EACH ROW EXECUTE FUNCTION cases_events_chain();

-- Backfill the events stored before this migration, each case in version order.
LOCK TABLE cases_events IN EXCLUSIVE MODE;
UPDATE cases_events e SET chain_hash = c.h
  FROM (SELECT originator_id, originator_version,
               case_chain(case_event_piece(originator_id, originator_version, topic, state))
                   OVER (PARTITION BY originator_id ORDER BY originator_version) AS h
          FROM cases_events) c
 WHERE e.originator_id = c.originator_id AND e.originator_version = c.originator_version
   AND e.chain_hash IS NULL;
INSERT INTO case_chain_heads (case_id, version, chain_hash)
SELECT DISTINCT ON (originator_id) originator_id, originator_version, chain_hash
  FROM cases_events ORDER BY originator_id, originator_version DESC
ON CONFLICT (case_id) DO NOTHING;
"""),
    (3, "deadlines: timers of statutory clocks, loaded holiday calendars", """
-- One row per (case, clock, kind): kind 'warn' is the reminder 3 days before the due date,
-- 'due' the check the day after it. The case's own events are the source of truth; these rows
-- only say when to look. `generation` is the case version the row was computed from: an
-- upsert from an older version is ignored, so late or out-of-order work cannot undo newer.
CREATE TABLE IF NOT EXISTS deadline_timers (
    case_id uuid NOT NULL,
    clock text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('warn', 'due')),
    fire_at timestamptz NOT NULL,
    due_on date NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'fired', 'cancelled')),
    division text NOT NULL,
    unit_id text NOT NULL DEFAULT '',
    obligation text NOT NULL DEFAULT 'duty' CHECK (obligation IN ('duty', 'window')),
    provisional boolean NOT NULL DEFAULT false,
    generation bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, clock, kind)
);
-- A tick reads only the pending rows that are due: its cost follows the number due.
CREATE INDEX IF NOT EXISTS deadline_timers_fire_idx
    ON deadline_timers (fire_at) WHERE state = 'pending';
-- Listings of open clocks by jurisdiction (prefix) and by unit.
CREATE INDEX IF NOT EXISTS deadline_timers_division_idx
    ON deadline_timers (division text_pattern_ops, due_on)
    WHERE kind = 'due' AND state <> 'cancelled';
CREATE INDEX IF NOT EXISTS deadline_timers_unit_idx
    ON deadline_timers (unit_id, due_on) WHERE kind = 'due' AND state <> 'cancelled';
-- Clocks to recompute when a year's holiday notice is loaded.
CREATE INDEX IF NOT EXISTS deadline_timers_provisional_idx
    ON deadline_timers (case_id) WHERE provisional AND kind = 'due' AND state <> 'cancelled';

-- Years of the State Council holiday notice loaded by an administrator (they override the
-- chinese-calendar package's data for the same year).
CREATE TABLE IF NOT EXISTS calendar_years (
    year int PRIMARY KEY CHECK (year BETWEEN 1900 AND 2200),
    holidays date[] NOT NULL,
    swapped_workdays date[] NOT NULL,
    source text NOT NULL DEFAULT '',
    loaded_by text NOT NULL DEFAULT '',
    loaded_at timestamptz NOT NULL DEFAULT now()
);
"""),
    (4, "record of every read of petitioner identity", """
CREATE TABLE IF NOT EXISTS identity_reads (
    id bigserial PRIMARY KEY,
    case_id uuid NOT NULL,
    subject text NOT NULL,
    role text NOT NULL,
    jurisdiction text NOT NULL,
    purpose text NOT NULL,
    read_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS identity_reads_case_idx ON identity_reads (case_id, id);
CREATE INDEX IF NOT EXISTS case_summaries_division_pattern_idx
    ON case_summaries (division text_pattern_ops, registered_position DESC);
"""),
    (7, "keys for matching repeat and duplicate petitions", """
ALTER TABLE case_summaries ADD COLUMN IF NOT EXISTS petitioner_key text;
ALTER TABLE case_summaries ADD COLUMN IF NOT EXISTS content_digest text;
CREATE INDEX IF NOT EXISTS case_summaries_petitioner_idx
    ON case_summaries (petitioner_key, registered_position DESC) WHERE petitioner_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS case_summaries_content_idx
    ON case_summaries (content_digest, registered_position DESC);
-- A registration that joined an existing case (repeat or duplicate), by the request's id, so
-- a retried request with the same Idempotency-Key joins it once.
CREATE TABLE IF NOT EXISTS registration_links (
    request_id uuid PRIMARY KEY,
    case_id uuid NOT NULL,
    kind text NOT NULL,
    submission_digest text NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now()
);
"""),
    (5, "notify: rendered documents and once-only deliveries", """
CREATE TABLE IF NOT EXISTS documents (
    id uuid PRIMARY KEY,
    case_id uuid NOT NULL,
    event_id text NOT NULL,
    kind text NOT NULL,
    recipient text NOT NULL,
    division text NOT NULL,
    title text NOT NULL,
    template text NOT NULL,
    data jsonb NOT NULL,
    html text NOT NULL,
    text text NOT NULL,
    pdf bytea,
    encrypted boolean NOT NULL DEFAULT false,
    digest text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS documents_case_idx ON documents (case_id, created_at, id);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id text NOT NULL,
    recipient text NOT NULL,
    channel text NOT NULL,
    id uuid NOT NULL UNIQUE,
    case_id uuid NOT NULL,
    trigger_version int NOT NULL,
    division text NOT NULL,
    kind text NOT NULL,
    party text NOT NULL,
    document_ids uuid[] NOT NULL,
    optional boolean NOT NULL DEFAULT false,
    state text NOT NULL CHECK (state IN
        ('pending', 'sending', 'delivered', 'sent', 'failed', 'dead_lettered')),
    attempts int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz,
    claimed_by text,
    last_error text,
    provider_ref text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, recipient, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_due_idx
    ON deliveries (next_attempt_at) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS deliveries_lease_idx
    ON deliveries (lease_until) WHERE state = 'sending';
CREATE INDEX IF NOT EXISTS deliveries_dead_idx
    ON deliveries (division text_pattern_ops, updated_at) WHERE state = 'dead_lettered';
CREATE INDEX IF NOT EXISTS deliveries_case_idx ON deliveries (case_id);
"""),
    (6, "trace context beside each event (observability)", """
-- The W3C traceparent of the request or message that appended each event, written by the
-- store's save path before the events themselves; the relay puts it on the bus message so a
-- petition's whole handling is one trace, also when events are republished or replayed.
CREATE TABLE IF NOT EXISTS event_trace_context (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    traceparent text NOT NULL,
    PRIMARY KEY (originator_id, originator_version)
);
"""),
    (8, "append in one round trip: lock, insert and notify inside the server", """
-- The store's append as one statement (run in autocommit, so the statement is the
-- transaction): the trace context rows, then the EXCLUSIVE table lock, the NOTIFY and the
-- events. The lock serialises appends so that notification ids are assigned in commit order
-- (a reader tailing the log never passes an id that is filled in later). Taken here, it is
-- held for server time only: never while the client is between round trips, or waiting for
-- its CPU. The events' state arrives as stored (encrypted) and the chain trigger of
-- migration 2 hashes each row as before. A duplicate (case, version) raises unique_violation
-- and rolls everything back, so the writer sees the usual optimistic-concurrency conflict.
CREATE OR REPLACE FUNCTION cases_append(
    events stored_event_uuid[], trace_ids uuid[], trace_versions bigint[],
    traceparents text[], lock_timeout_s int)
RETURNS SETOF bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
""" + _APPEND_PROLOGUE + """    RETURN QUERY
        INSERT INTO cases_events (originator_id, originator_version, topic, state)
        SELECT e.originator_id, e.originator_version, e.topic, e.state FROM unnest(events) e
        RETURNING notification_id;
END
$fn$;
"""),
    (9, "case summaries stay in their rows uncompressed, as a projection rebuild lays them out", """
-- A summary (about 2 kB of jsonb) is kept in its row unless the row outgrows a page:
-- compressing each one on every upsert cost the server more than the space it saved, and
-- every read paid to decompress it. The rebuild creates its table the same way
-- (petitions.infra.projection._STORAGE), so the live table does not change shape on a rebuild.
ALTER TABLE case_summaries SET (toast_tuple_target = 8160);
"""),
    (10, "append: events as column arrays, hash chains computed per statement", """
-- Two costs of migration 8's append, about two thirds of its time per event:
-- * the events arrived as one array of composite values, which travels as text (the state
--   bytes hex-escaped) and is parsed row by row: they now come as four arrays of plain types,
--   sent in binary;
-- * the row trigger of migration 2 ran a plpgsql function, a lookup of the predecessor and an
--   upsert of the case's chain head for every event, inside the table lock: the append now
--   hashes the batch in the statement (each case's events chained from its stored
--   predecessor, in version order) and moves each case's head once.
-- The trigger still chains a row inserted any other way (no chain_hash given), refusing one
-- without a hashed predecessor as before; the append leaves to it the rows of a case it
-- cannot chain (versions not consecutive, or no hashed predecessor), so it refuses those too.
-- A chain_hash given by a writer is checked like every other by the verifier, which
-- recomputes each link from the row. Migration 8's function stays for writers not yet
-- upgraded; its rows reach the trigger.

-- case_chain_after(prev, piece ORDER BY version): the chain hash after `piece`, the chain
-- going on from the first row's `prev`.
CREATE OR REPLACE FUNCTION case_chain_after_step(state bytea, prev bytea, piece bytea)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT sha256(coalesce(state, prev) || piece)
$fn$;

CREATE OR REPLACE AGGREGATE case_chain_after(bytea, bytea) (
    SFUNC = case_chain_after_step, STYPE = bytea
);

DROP TRIGGER IF EXISTS cases_events_chain ON cases_events;
CREATE TRIGGER cases_events_chain BEFORE INSERT ON cases_events
    FOR EACH ROW WHEN (NEW.chain_hash IS NULL) EXECUTE FUNCTION cases_events_chain();

""" + _APPEND_BY_COLUMNS_SIGNATURE + _APPEND_PROLOGUE + _APPEND_BY_COLUMNS_BODY),
    (11, "case listings of a city, and of a county by status, in the listing's order", """
-- Pages of cases newest first (services/intake/queries.py, listing_query), read from an
-- index in that order: a city's (the first four digits of the division; a city whose
-- counties have few cases yet, as when they join the platform one by one, was otherwise
-- found by walking every newer case of the province), and a county's work queue by status
-- (otherwise every case of that status in the province, or every case of the county).
CREATE INDEX IF NOT EXISTS case_summaries_city_idx
    ON case_summaries (left(division, 4), registered_position DESC);
CREATE INDEX IF NOT EXISTS case_summaries_division_status_idx
    ON case_summaries (division, status, registered_position DESC);
"""),
    (12, "the append's statement planned once, not on every call", """
-- plpgsql prepares the append's statement once per connection, and then chose a custom plan
-- for every call: planned for the given arrays, it always looked cheaper than the generic
-- one, so each append was planned afresh (about 300 us of server CPU for a one-event append,
-- 70% of its cost) with the event table's lock already held. The generic plan is the same
-- plan: unnest the arrays, look each case's predecessor up by key, insert.
ALTER FUNCTION cases_append(uuid[], bigint[], text[], bytea[], uuid[], bigint[], text[], int)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION cases_append(stored_event_uuid[], uuid[], bigint[], text[], int)
    SET plan_cache_mode = force_generic_plan;
"""),
    (13, "the duplicate lookup reads open cases only", """
-- A new petition joins the oldest open case with its content (services/intake/matching.py,
-- SCREEN_SQL). Through an index of every case with that content, a content shared by many
-- closed cases (a campaign of identical letters, each batch closed or not accepted) had
-- every one of them read and discarded on each registration. This index holds open cases
-- only: the lookup reads at most the one it returns. Its predicate is the lookup's, word for
-- word (CLOSED_STATUSES, sorted; a test holds them equal), so the planner can use it.
CREATE INDEX IF NOT EXISTS case_summaries_open_content_idx
    ON case_summaries (content_digest, registered_position DESC)
    WHERE status NOT IN ('archived', 'closed', 'not_accepted', 'not_accepted_again',
                         'terminated', 'withdrawn');
DROP INDEX IF EXISTS case_summaries_content_idx;
"""),
    (14, "a petitioner's earlier cases read by category, open or terminated ones only", """
-- Screening a petition (services/intake/matching.py, SCREEN_SQL) looks among the
-- petitioner's cases for an open one on the same matter (a repeat) and, failing that, for the
-- matter's termination after re-review. Through an index of all of the petitioner's cases, a
-- petitioner with years of closed cases had every one of them read and discarded on each new
-- petition, by both lookups. Each lookup now has an index of the cases it can return, by
-- petitioner and category: it reads at most the petitioner's open (or terminated) cases of
-- that category. The predicates are the lookups' own conditions, word for word (the open
-- one is CLOSED_STATUSES, sorted; a test holds them equal), so the planner can use them.
-- The subject (inside the summary) is left out of the keys: one petitioner's open or
-- terminated cases of one category are few.
CREATE INDEX IF NOT EXISTS case_summaries_open_petitioner_idx
    ON case_summaries (petitioner_key, category, registered_position DESC)
    WHERE status NOT IN ('archived', 'closed', 'not_accepted', 'not_accepted_again',
                         'terminated', 'withdrawn');
CREATE INDEX IF NOT EXISTS case_summaries_terminated_petitioner_idx
    ON case_summaries (petitioner_key, category, registered_position DESC)
    WHERE (status = 'terminated' OR (summary->'re_review'->>'issued_on') IS NOT NULL);
DROP INDEX IF EXISTS case_summaries_petitioner_idx;
"""),
    (15, "case summaries lose the index no listing reads", """
-- Case listings name a city, the province or any other prefix by its leading digits
-- (`left(division, n)`, migration 11; petitions/infra/divisions.py), never with LIKE: the
-- index on `division text_pattern_ops` serves no statement on case summaries, yet every
-- summary written (several per case as it moves) inserted into it, and vacuum went through
-- it. A county (`division = $1`) is read through case_summaries_division_idx.
DROP INDEX IF EXISTS case_summaries_division_pattern_idx;
"""),
    (16, "a case summary updated in place while its indexed fields stay", """
-- A case's summary is written again as its events come (routed, clock started, notice
-- delivered: about one and a half updates per case, most of which leave the status as it
-- was). Each update inserted a new entry into every index of the table, and vacuum had to
-- clear every one of them, because one index predicate read the summary document (whether
-- a re-review opinion was issued), which every update changes: PostgreSQL updates a row in
-- place (HOT: no index entries) only when no column an index reads has changed. That fact
-- is now a column of its own, written by the projector with the summary, and pages keep a
-- quarter free for the new versions of their rows.
ALTER TABLE case_summaries ADD COLUMN IF NOT EXISTS re_review_issued boolean NOT NULL
    DEFAULT false;
UPDATE case_summaries SET re_review_issued = true
 WHERE (summary->'re_review'->>'issued_on') IS NOT NULL AND NOT re_review_issued;
DROP INDEX IF EXISTS case_summaries_terminated_petitioner_idx;
CREATE INDEX case_summaries_terminated_petitioner_idx
    ON case_summaries (petitioner_key, category, registered_position DESC)
    WHERE (status = 'terminated' OR re_review_issued);
ALTER TABLE case_summaries SET (fillfactor = 75);
"""),
    (17, "case summaries kept as the JSON text the projector writes", """
-- A summary is written whole by the projector and read whole by the API and the projector;
-- no index or query looks inside it but the screening's subject, on the few rows its index
-- finds. As jsonb, every upsert and every row a rebuild COPYs was parsed into jsonb's tree,
-- its object keys sorted (a third of the server's CPU in a rebuild), and every read turned
-- the tree back into text. As json it is the text as written, checked to be JSON, and read
-- back as it is. (The table is rewritten once, under its lock, as this runs.)
ALTER TABLE case_summaries ALTER COLUMN summary TYPE json USING summary::json;
"""),
    (18, "appends take turns on an advisory lock, which vacuum does not block", """
-- Appends took turns on the event table's EXCLUSIVE lock, which conflicts with the SHARE
-- UPDATE EXCLUSIVE lock VACUUM and ANALYZE hold while they run, autovacuum's included. An
-- append that found autovacuum on the table waited deadlock_timeout (1 s by default) for the
-- deadlock check to cancel it, and every append queued behind waited as long: a second-long
-- stall of every writer whenever autovacuum came to the log. Under a steady stream of appends
-- no autovacuum of the log ever finished, until one run to prevent transaction id wraparound,
-- which is not cancelled, would have held every append for the whole of its run.
-- The function now takes turns on a transaction-level advisory lock (the same key for every
-- append), which nothing vacuum takes conflicts with. It orders appends as the table lock did:
-- taken before the insert draws its notification ids, released only once the commit is
-- visible. A writer still on the library's path or on migration 8's function takes the
-- table's EXCLUSIVE lock, which conflicts with the ROW EXCLUSIVE lock this function's insert
-- takes before it draws an id: such a writer and this function still take turns.
""" + _APPEND_BY_COLUMNS_SIGNATURE + _APPEND_PROLOGUE_ADVISORY + _APPEND_BY_COLUMNS_BODY + """
-- CREATE OR REPLACE set the function's options afresh: migration 12's plan again.
ALTER FUNCTION cases_append(uuid[], bigint[], text[], bytea[], uuid[], bigint[], text[], int)
    SET plan_cache_mode = force_generic_plan;
"""),
]


def migrate(dsn: str, schema: str = "public") -> list[int]:
    """Create the event store table and apply pending migrations. Safe to run concurrently:
    a session-level advisory lock serialises whole runs (several pods may start at once)."""
    with psycopg.connect(dsn, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            store = CaseStore(dsn, schema=schema, create_table=True, pool_size=1)
            store.close()
            return _apply_migrations(dsn, schema)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def _apply_migrations(dsn: str, schema: str) -> list[int]:
    applied: list[int] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, description, sql in MIGRATIONS:
            if version in done:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                (version, description),
            )
            applied.append(version)
        conn.commit()
    log.info("schema migrated", extra={"applied": applied})
    return applied


if __name__ == "__main__":
    import os

    logging.basicConfig(level=logging.INFO)
    print("applied migrations:", migrate(os.environ["POSTGRES_DSN"]) or "none (up to date)")
