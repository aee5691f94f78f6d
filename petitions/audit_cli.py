"""The audit command line (`python -m petitions.audit`, `make verify`).

    verify [--case ID] [--json]         recompute the hash chains in the database (POSTGRES_DSN,
                                        or the embedded server under .data/ as `make run` uses)
    verify-export FILE [--decode]       re-verify an exported case document offline (no
                                        database); --decode also decrypts the stored events with
                                        PAYLOAD_ENCRYPTION_KEY and checks the exported history
                                        and summary against them

Exit status: 0 when everything verifies, 1 when something does not (the first bad event is
named), 2 on a usage or connection error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

OK, FAILED, ERROR = 0, 1, 2


@contextmanager
def database() -> Iterator[str]:
    """POSTGRES_DSN when set, else the embedded PostgreSQL `make run` uses (no NATS needed)."""
    dsn = os.environ.get("POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    from petitions.devstack import DATA_DIR, embedded_postgres

    with embedded_postgres(DATA_DIR / "postgres") as embedded:
        yield embedded


async def verify_database(dsn: str, case_id: UUID | None, as_json: bool) -> int:
    import asyncpg

    from petitions.infra.audit import CaseAudit
    from petitions.infra.dsn import as_uri

    pool = await asyncpg.create_pool(as_uri(dsn), min_size=1, max_size=2)
    try:
        audit = CaseAudit(pool)
        if case_id is not None:
            result = await audit.verify_case(case_id)
            if result is None:
                print(f"no case {case_id}", file=sys.stderr)
                return ERROR
            print(json.dumps(result.as_dict(), ensure_ascii=False) if as_json else result.describe())
            return OK if result.ok else FAILED
        report = await audit.verify_all(
            on_failure=None if as_json else (lambda r: print(r.describe(), flush=True)))
        if as_json:
            print(json.dumps(report.as_dict(), ensure_ascii=False))
        else:
            print(f"{'ok' if report.ok else 'FAILED'}: {report.cases} cases, {report.events} "
                  f"events verified in {report.seconds:.2f}s "
                  f"({report.events_per_second:,.0f} events/s); {report.failed} cases failed")
        return OK if report.ok else FAILED
    except (asyncpg.UndefinedColumnError, asyncpg.UndefinedTableError) as exc:
        print(f"the schema has no hash chain yet ({exc}); run `make migrate`", file=sys.stderr)
        return ERROR
    finally:
        await pool.close()


def verify_export_file(path: Path, decode: bool, as_json: bool) -> int:
    from petitions.domain.audit import MalformedExport, verify_export

    try:
        document = json.loads(path.read_text("utf-8"))
        result = verify_export(document)
    except (OSError, ValueError) as exc:  # MalformedExport and JSON errors are ValueErrors
        kind = "not a case export" if isinstance(exc, MalformedExport) else "cannot read"
        print(f"{path}: {kind}: {exc}", file=sys.stderr)
        return ERROR
    contents = None
    if decode and result.ok:
        from petitions.infra.audit import check_export_contents, offline_decoder
        from petitions.infra.settings import CommonAuthSettings

        contents = check_export_contents(
            document, offline_decoder(CommonAuthSettings().payload_encryption_key))
    recorded = (document.get("verification") or {}).get("ok")
    if as_json:
        print(json.dumps({**result.as_dict(), "contents": contents or ("ok" if decode else None),
                          "recorded_ok": recorded}, ensure_ascii=False))
    else:
        print(f"{path}: {result.describe()}")
        if contents:
            print(f"{path}: contents: {contents}")
        if recorded is not None and recorded != result.ok:
            print(f"{path}: note: the export recorded ok={recorded} when it was made")
    return OK if result.ok and not contents else FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petitions.audit",
                                     description="Verify the case event hash chains.")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify every case (or one) in the database")
    verify.add_argument("--case", type=UUID, help="only this case id")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    export = sub.add_parser("verify-export", help="re-verify an exported case offline")
    export.add_argument("file", type=Path)
    export.add_argument("--decode", action="store_true",
                        help="also decrypt (PAYLOAD_ENCRYPTION_KEY) and check history and summary")
    export.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)

    if args.command == "verify-export":
        return verify_export_file(args.file, args.decode, args.json)
    try:
        with database() as dsn:
            return asyncio.run(verify_database(dsn, args.case, args.json))
    except OSError as exc:
        print(f"cannot reach the database: {exc}", file=sys.stderr)
        return ERROR


if __name__ == "__main__":
    sys.exit(main())
