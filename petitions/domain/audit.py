"""Tamper evidence for a case's stored events: recompute the hash chain and name the first
event that was altered, removed or reordered. Pure: no I/O.

Every stored event carries

    chain_hash = sha256(prev || case id (16 bytes) || version (8 bytes, big endian)
                        || topic (UTF-8) || state)

where `prev` is the chain hash of the case's previous version (32 zero bytes for version 1),
computed by the database when the event is inserted (migration 2), over the bytes exactly as
stored (the encrypted state). The database also keeps each case's head (newest version and its
hash), so that removing the newest events is detectable as well.

The verifier never trusts the stored hashes: it recomputes each link from the stored bytes and
the previous link, and compares.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal
from uuid import UUID

GENESIS = bytes(32)
ALGORITHM = "sha256"
CONSTRUCTION = ("chain_hash = sha256(prev || case_id as 16 bytes || version as 8-byte big-endian "
                "integer || topic as UTF-8 || state); prev = chain_hash of the previous version, "
                "32 zero bytes for version 1")

Problem = Literal["altered", "removed", "reordered", "head_mismatch"]

#: One stored event as the verifier needs it: (version, topic, state, chain_hash). Any
#: indexable row with those four fields in that order will do (tuples, database records).
StoredRow = Sequence[Any]


@dataclass(frozen=True)
class ChainHead:
    version: int
    chain_hash: bytes


@dataclass(frozen=True)
class VerificationResult:
    """ok, or the first event that is not as it was written."""

    case_id: str
    ok: bool
    events: int
    head_version: int | None
    problem: Problem | None = None
    version: int | None = None     # the first bad event (for "removed": the first missing one)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.ok:
            return f"case {self.case_id}: ok ({self.events} events, head at {self.head_version})"
        return f"case {self.case_id}: event {self.version} {self.problem}: {self.detail}"


def link(prev: bytes, case_id: bytes, version: int, topic: str | None, state: bytes | None) -> bytes:
    """The chain hash of one stored event, given its predecessor's."""
    return hashlib.sha256(b"".join((prev, case_id, version.to_bytes(8, "big"),
                                    (topic or "").encode("utf-8"), state or b""))).digest()


def chain(case_id: UUID, rows: Iterable[tuple[int, str, bytes]]) -> list[bytes]:
    """The chain hashes of a case's events (version, topic, state), in order."""
    prev, out, idb = GENESIS, [], case_id.bytes
    for version, topic, state in rows:
        prev = link(prev, idb, version, topic, state)
        out.append(prev)
    return out


def chain_intact(case_id: UUID, rows: Iterable[StoredRow], head_version: int | None,
                 head_hash: bytes | None) -> bool:
    """True when the rows are versions 1..n, each hashes to its link, and the head records
    version n and its hash. The fast path for verifying many cases: only a case for which
    this is False needs `verify_chain` to name its first bad event."""
    sha256 = hashlib.sha256
    idb = case_id.bytes
    prev = GENESIS
    expected = 1
    for row in rows:
        version = row[0]
        stored = row[3]
        if version != expected or stored is None:
            return False
        topic = row[1]
        state = row[2]
        prev_ = sha256(b"".join((prev, idb, version.to_bytes(8, "big"),
                                 topic.encode("utf-8") if topic else b"", state or b""))).digest()
        if prev_ != stored:
            return False
        prev = prev_
        expected += 1
    return head_version == expected - 1 and head_hash == prev and expected > 1


def verify_chain(case_id: UUID, rows: Sequence[StoredRow], head: ChainHead | None) -> VerificationResult:
    """Verify one case's stored events, ordered by version as stored.

    Reports the FIRST problem: an event whose bytes no longer hash to its link (altered), a
    version missing from the sequence or from the end of it (removed), or an event whose bytes
    hash correctly at another position (reordered: versions or contents swapped).
    """
    cid = str(case_id)
    head_version = head.version if head is not None else None
    sha256 = hashlib.sha256
    idb = case_id.bytes
    prev = GENESIS
    expected = 1
    n = len(rows)
    for i in range(n):
        row = rows[i]
        version = row[0]
        if version != expected:
            return _out_of_sequence(cid, rows, i, expected, head_version)
        stored = row[3]
        topic = row[1]
        state = row[2]
        if stored is None:
            return VerificationResult(cid, False, n, head_version, "altered", version,
                                      "the event has no chain hash (written around the trigger)")
        h = sha256(prev + idb + version.to_bytes(8, "big")
                   + (topic.encode("utf-8") if topic else b"") + (state or b"")).digest()
        if h != stored:
            return _mismatch(cid, idb, rows, i, prev, head_version)
        prev = h
        expected += 1
    return _check_head(cid, n, rows[-1][0] if n else 0, prev, head)


def _out_of_sequence(cid: str, rows: Sequence[StoredRow], i: int, expected: int,
                     head_version: int | None) -> VerificationResult:
    version = rows[i][0]
    if any(r[0] == expected for r in rows[i + 1:]):
        return VerificationResult(cid, False, len(rows), head_version, "reordered", expected,
                                  f"version {expected} is stored after version {version}")
    if version > expected:
        missing = (f"version {expected}" if version == expected + 1
                   else f"versions {expected}..{version - 1}")
        return VerificationResult(cid, False, len(rows), head_version, "removed", expected,
                                  f"{missing} missing: the stored sequence jumps from "
                                  f"{expected - 1} to {version}")
    return VerificationResult(cid, False, len(rows), head_version, "reordered", version,
                              f"version {version} stored out of order (after {expected - 1})")


def _mismatch(cid: str, idb: bytes, rows: Sequence[StoredRow], i: int, prev: bytes,
              head_version: int | None) -> VerificationResult:
    """The event at position i does not hash to its link. Altered, or moved from elsewhere?"""
    version = rows[i][0]
    stored_here = rows[i][3]
    for j in range(i + 1, len(rows)):
        other = rows[j]
        # Would the other event's bytes belong here? Either it carries its original hash
        # along (versions swapped) or it left it behind (contents swapped).
        candidate = link(prev, idb, version, other[1], other[2])
        if candidate == stored_here or candidate == other[3]:
            return VerificationResult(
                cid, False, len(rows), head_version, "reordered", version,
                f"the event stored at version {version} is not the one written there; the "
                f"event written as version {version} is now stored at version {other[0]}")
    return VerificationResult(cid, False, len(rows), head_version, "altered", version,
                              f"the stored bytes of version {version} do not hash to its chain link")


def _check_head(cid: str, n: int, last: int, last_hash: bytes,
                head: ChainHead | None) -> VerificationResult:
    if head is None:
        if n == 0:
            return VerificationResult(cid, False, 0, None, "removed", 1, "no events and no head")
        return VerificationResult(cid, False, n, None, "head_mismatch", last,
                                  "the case has events but no recorded chain head")
    if head.version > last:
        missing = (f"version {last + 1}" if head.version == last + 1
                   else f"versions {last + 1}..{head.version}")
        return VerificationResult(cid, False, n, head.version, "removed", last + 1,
                                  f"{missing} missing: the chain head records version "
                                  f"{head.version} but the stored events end at {last}")
    if head.version < last:
        return VerificationResult(cid, False, n, head.version, "head_mismatch", head.version + 1,
                                  f"events after the recorded head (version {head.version}) "
                                  f"were not chained by the store")
    if head.chain_hash != last_hash:
        return VerificationResult(cid, False, n, head.version, "head_mismatch", last,
                                  f"version {last} does not end the chain the head records "
                                  f"(the newest events were replaced)")
    return VerificationResult(cid, True, n, head.version)


class MalformedExport(ValueError):
    """The document is not a case export this system wrote."""


def verify_export(document: dict[str, Any]) -> VerificationResult:
    """Re-verify an exported case offline: recompute the chain over the exported (base64)
    states and compare it with the exported hashes and head. Needs no database and no key."""
    try:
        case_id = UUID(document["case_id"])
        rows = [(int(e["version"]), e["topic"],
                 base64.b64decode(e["state"], validate=True),
                 bytes.fromhex(e["chain_hash"]) if e.get("chain_hash") is not None else None)
                for e in document["stored_events"]]
        raw_head = document.get("head")
        head = (None if raw_head is None
                else ChainHead(int(raw_head["version"]), bytes.fromhex(raw_head["chain_hash"])))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise MalformedExport(f"not a case export: {type(exc).__name__}: {exc}") from exc
    return verify_chain(case_id, rows, head)
