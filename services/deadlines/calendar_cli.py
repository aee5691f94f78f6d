"""Load a year of the State Council holiday notice and recompute provisional deadlines.

    python -m services.deadlines.calendar_cli load FILE.json

FILE.json: {"year": 2027, "holidays": ["2027-01-01", ...], "swapped_workdays": [...],
"source": "国办发明电〔2026〕N号"} (or a list of such objects). Every rest day of each break goes in
`holidays` (weekends inside a break included); weekend days that become working days go in
`swapped_workdays`. Uses POSTGRES_DSN (and PAYLOAD_ENCRYPTION_KEY) like the services.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from petitions.infra.dsn import as_uri
from petitions.infra.store import CaseStore
from services.deadlines.calendars import CalendarBook, CalendarYear
from services.deadlines.engine import ClockEngine
from services.deadlines.handler import DeadlinesHandler
from services.deadlines.settings import DeadlinesServiceSettings, bureau_resolver, load_policy


async def load(path: Path, loaded_by: str) -> dict:
    settings = DeadlinesServiceSettings()
    data = json.loads(path.read_text("utf-8"))
    years = [CalendarYear.from_dict(d) for d in (data if isinstance(data, list) else [data])]
    pool = await asyncpg.create_pool(as_uri(settings.postgres_dsn), min_size=1, max_size=4,
                                     server_settings={"search_path": settings.db_schema})
    store = await asyncio.to_thread(CaseStore, settings.postgres_dsn,
                                    cipher_key=settings.payload_encryption_key,
                                    schema=settings.db_schema, pool_size=4)
    try:
        book = CalendarBook()
        await book.refresh(pool)
        for year in years:
            await book.store(pool, year, loaded_by)
        engine = ClockEngine(store, book.current, lambda: datetime.now(UTC),
                             load_policy(settings.unit_limits_file, settings.calendar_rules_file),
                             bureau_resolver(settings.directory_file))
        counts = await DeadlinesHandler(engine, pool).recompute_provisional()
        return {"loaded": [y.year for y in years], "recomputed": counts}
    finally:
        await pool.close()
        await asyncio.to_thread(store.close)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.deadlines.calendar_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("load", help="load a year's holiday notice from a JSON file")
    cmd.add_argument("file", type=Path)
    cmd.add_argument("--loaded-by", default="calendar-cli")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(load(args.file, args.loaded_by))
    except (ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
