"""The vocabulary's reads: the metric catalogue, device counts by area, and the spans data.json
publishes."""

from __future__ import annotations

import time

from psycopg import sql
from psycopg.rows import dict_row

LEVEL_COLUMNS = {"csa": "csa", "neighbourhood": "neighbourhood"}


async def metrics(conn) -> list[dict]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(
        "SELECT metric_key, metric, unit, description, min_value, max_value, aggregation FROM metrics ORDER BY metric_key"
    )).fetchall()


async def metric(conn, code: str) -> dict | None:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(
        "SELECT metric_key, metric, unit, aggregation FROM metrics WHERE metric = %s", (code,))).fetchone()


_METRICS: tuple[float, dict[str, tuple]] = (0.0, {})
METRICS_TTL_S = 60.0


async def metric_rows(conn, wanted: tuple[str, ...] = ()) -> dict[str, tuple]:
    """{metric: (metric_key, unit, aggregation)} from a copy of the catalogue refreshed every minute (it
    changes with migrations only), or at once when a ``wanted`` metric is not in the copy: one round
    trip less per request that names metrics."""
    global _METRICS
    loaded, rows = _METRICS
    if time.monotonic() - loaded > METRICS_TTL_S or any(m not in rows for m in wanted):
        cur = await conn.execute("SELECT metric, metric_key, unit, aggregation FROM metrics")
        rows = {r[0]: tuple(r[1:]) for r in await cur.fetchall()}
        _METRICS = (time.monotonic(), rows)
    return rows


async def metric_names(conn, keys: set[int]) -> dict[int, tuple[str, str]]:
    """{metric_key: (metric, unit)} for ``keys``, from the catalogue's copy (refreshed at once for a key it
    does not hold)."""
    rows = await metric_rows(conn)
    by_key = {v[0]: (m, v[1]) for m, v in rows.items()}
    if not keys <= by_key.keys():
        global _METRICS
        _METRICS = (0.0, {})
        by_key = {v[0]: (m, v[1]) for m, v in (await metric_rows(conn)).items()}
    return by_key


async def metric_row(conn, metric: str) -> tuple | None:
    """(metric_key, unit, aggregation) of a catalogue metric, or None."""
    return (await metric_rows(conn, (metric,))).get(metric)


async def devices_by_area(conn, level: str) -> list[tuple[str, str, int]]:
    """(area, kind, devices) for the devices in service (not retired), by their current placement."""
    q = sql.SQL("SELECT {}, kind, count(*) FROM devices WHERE retired_at IS NULL GROUP BY 1, 2").format(
        sql.Identifier(LEVEL_COLUMNS[level]))
    return await (await conn.execute(q)).fetchall()


async def reading_span(conn, metric_codes: list[str]):
    """(oldest, newest) reading time over the given metrics: two index probes per metric."""
    return await (await conn.execute(
        "SELECT min(lo), max(hi) FROM metrics m, LATERAL (SELECT "
        "(SELECT min(time) FROM readings WHERE metric_key = m.metric_key) AS lo, "
        "(SELECT max(time) FROM readings WHERE metric_key = m.metric_key) AS hi) s "
        "WHERE m.metric = ANY(%s)", (metric_codes,))).fetchone()


async def registry_span(conn):
    """(first installation, latest change) of the device registry."""
    return await (await conn.execute(
        "SELECT min(installed), greatest(max(installed), max(status_at), max(retired_at)) FROM devices")).fetchone()
