"""Commits that do not wait for the WAL flush, chosen one statement at a time.

`FROM` this row source in a statement, and the transaction it runs in commits with
`synchronous_commit = off`: `set_config(..., true)` lasts until that transaction ends, and a
one-statement (autocommit) transaction reads it at its own commit. It has to be a row source
the statement reads: a CTE that nothing reads is never run.

Only for writes a crash may lose: what is derived again from the log, or what a later flushed
commit carries to disk with it (WAL is flushed in order)."""
from __future__ import annotations

UNFLUSHED = "(SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
