"""The baseline: a plain FastAPI endpoint doing one INSERT per POST with asyncpg.

Served by uvicorn in its own process with 1 worker (uvicorn's defaults otherwise), on the same
database as intake: `BENCH_BASELINE_DSN=postgresql://... python -m uvicorn bench.baseline_app:app`.
The row is committed (autocommit, synchronous_commit as the server has it) before the 201.
"""
from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import asyncpg
from fastapi import FastAPI

TABLE = "bench_plain_petitions"
DDL = f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, body jsonb NOT NULL, " \
      "created_at timestamptz NOT NULL DEFAULT now())"

state: dict[str, asyncpg.Pool] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["BENCH_BASELINE_DSN"], min_size=4, max_size=10)
    await pool.execute(DDL)
    state["pool"] = pool
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@app.post("/v1/petitions", status_code=201)
async def create(body: dict[str, Any]) -> dict[str, str]:
    case_id = uuid4()
    await state["pool"].execute(f"INSERT INTO {TABLE} (id, body) VALUES ($1, $2::jsonb)",
                                case_id, json.dumps(body, ensure_ascii=False))
    return {"case_id": str(case_id)}
