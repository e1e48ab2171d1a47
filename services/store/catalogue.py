"""The vocabulary's reads: the metric catalogue, device counts by area, and the spans data.json
publishes."""

from __future__ import annotations

import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class _Copy:
    """The metric catalogue as last read: by name {metric: (metric_key, unit, aggregation)}, by key
    {metric_key: (metric, unit)}."""

    loaded: float
    by_name: dict[str, tuple]
    by_key: dict[int, tuple[str, str]]


_COPY = _Copy(0.0, {}, {})
METRICS_TTL_S = 60.0


async def _catalogue(conn, names=(), keys=()) -> _Copy:
    """A copy of the catalogue refreshed every minute (it changes with migrations only), or at once when a
    metric named or keyed is not in it: one round trip less per request that names metrics."""
    global _COPY
    c = _COPY
    if (time.monotonic() - c.loaded > METRICS_TTL_S or any(m not in c.by_name for m in names)
            or any(k not in c.by_key for k in keys)):
        cur = await conn.execute("SELECT metric, metric_key, unit, aggregation FROM metrics")
        by_name = {r[0]: tuple(r[1:]) for r in await cur.fetchall()}
        c = _COPY = _Copy(time.monotonic(), by_name, {v[0]: (m, v[1]) for m, v in by_name.items()})
    return c


async def metric_rows(conn, wanted: tuple[str, ...] = ()) -> dict[str, tuple]:
    """{metric: (metric_key, unit, aggregation)} from the catalogue's copy."""
    return (await _catalogue(conn, names=wanted)).by_name


async def metric_names(conn, keys: set[int]) -> dict[int, tuple[str, str]]:
    """{metric_key: (metric, unit)} from the catalogue's copy."""
    return (await _catalogue(conn, keys=keys)).by_key


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
