"""Translate one POSTGRES_DSN into what each client library wants."""
from __future__ import annotations

from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict


def eventsourcing_env(dsn: str, schema: str = "public") -> dict[str, str]:
    """Environment for eventsourcing's PostgreSQL recorder built from a libpq DSN/URI."""
    parts = conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parts.get("dbname", "postgres")),
        "POSTGRES_HOST": str(parts.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(parts.get("port", "5432")),
        "POSTGRES_USER": str(parts.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(parts.get("password", "")),
        "POSTGRES_SCHEMA": schema,
    }


def as_uri(dsn: str, dbname: str | None = None) -> str:
    """A postgresql:// URI (what asyncpg accepts) for `dsn`, optionally naming another database.

    A host that is a directory (a Unix socket, as the embedded server uses) goes in the query.
    """
    parts = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    if dbname is not None:
        parts["dbname"] = dbname
    user = quote(parts.pop("user", "postgres"), safe="")
    password = quote(parts.pop("password", ""), safe="")
    host = parts.pop("host", "127.0.0.1")
    port = parts.pop("port", "5432")
    db = quote(parts.pop("dbname", "postgres"), safe="")
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        query = {"host": host, "port": port, **parts}
        return f"postgresql://{auth}/{db}?{urlencode(query, quote_via=quote)}"
    query_s = f"?{urlencode(parts, quote_via=quote)}" if parts else ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"postgresql://{auth}{host}:{port}/{db}{query_s}"
