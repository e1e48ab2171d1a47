"""The audit log of admin writes (migrations/009_audit_log.sql)."""

from __future__ import annotations

from psycopg.rows import dict_row

INSERT = """
INSERT INTO audit_log (method, path, device_id, client, status)
VALUES (%(method)s, left(%(path)s, 300), left(%(device_id)s, 64), left(%(client)s, 100), %(status)s)
"""
PAGE = """
SELECT id, at, method, path, device_id, client, status FROM audit_log
WHERE (%(device_id)s::text IS NULL OR device_id = %(device_id)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s
"""

async def record(conn, *, method: str, path: str, device_id: str | None, client: str | None, status: int) -> None:
    await conn.execute(INSERT, {"method": method, "path": path, "device_id": device_id, "client": client,
                                "status": status})

async def page(conn, *, device_id: str | None, before: int | None, limit: int) -> list[dict]:
    """Newest first; ``before`` is the id of the last entry of the previous page."""
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(PAGE, {"device_id": device_id, "before": before, "limit": limit})).fetchall()

