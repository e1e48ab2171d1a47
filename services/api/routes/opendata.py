"""Open data: the DCAT-US 1.1 catalogue (/data.json) and dataset downloads in CSV and GeoJSON,
streamed from a server-side cursor so memory stays flat however large the export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from services.api.deps import PoolDep, SettingsDep
from services.api.datasets import DATASETS, formatter, geometry
from services.api.problems import Problem, doc
from services.api.scope import CsaParam, resolve, time_range
from services.core.areas import baltimore
from services.store import catalogue as store
from services.store.datasets import READINGS_CSV, export_query

router = APIRouter(tags=["open data"])
POD = "https://project-open-data.cio.gov/v1.1/schema"
CHUNK_ROWS = 2000


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@router.get("/data.json", summary="DCAT-US 1.1 catalogue of the open datasets",
            description="The Project Open Data metadata schema that US open-data portals publish and data.gov harvests.")
async def catalogue(request: Request, pool: PoolDep, settings: SettingsDep):
    # Links follow where the API really answers (behind a trusted proxy, the scheme and host it forwards),
    # unless the deployment names its public address.
    base = settings.public_url or str(request.base_url).rstrip("/")
    b = baltimore().bounds
    spatial = f"{b[0]:.4f},{b[1]:.4f},{b[2]:.4f},{b[3]:.4f}"
    async with pool.connection() as conn:
        spans = {ds.id: await (store.reading_span(conn, list(ds.metrics)) if ds.metrics else store.registry_span(conn))
                 for ds in DATASETS.values()}
    datasets = []
    for ds in DATASETS.values():
        first, newest = spans[ds.id]
        url = f"{base}/v1/datasets/{ds.id}"
        datasets.append({
            "@type": "dcat:Dataset",
            "identifier": url,
            "title": ds.title,
            "description": ds.description,
            "keyword": list(ds.keywords),
            "modified": _iso(newest) or _iso(datetime.now(timezone.utc)),
            "publisher": {"@type": "org:Organization", "name": settings.publisher},
            "contactPoint": {"@type": "vcard:Contact", "fn": settings.contact_name, "hasEmail": f"mailto:{settings.contact_email}"},
            "accessLevel": "public",
            "license": "https://creativecommons.org/licenses/by/4.0/",
            "spatial": spatial,
            "temporal": f"{_iso(first)}/{_iso(newest)}" if first and newest else None,
            "accrualPeriodicity": ds.periodicity,
            "landingPage": f"{base}/docs",
            "theme": ["Environment", "Quality of life"],
            "distribution": [
                {"@type": "dcat:Distribution", "title": f"{ds.title} (CSV)", "downloadURL": f"{url}.csv",
                 "mediaType": "text/csv", "format": "CSV"},
                {"@type": "dcat:Distribution", "title": f"{ds.title} (GeoJSON)", "downloadURL": f"{url}.geojson",
                 "mediaType": "application/geo+json", "format": "GeoJSON"},
                {"@type": "dcat:Distribution", "title": "citysense API", "accessURL": f"{base}/docs",
                 "format": "API", "description": "REST API with OpenAPI documentation"},
            ],
        })
    return {
        "@context": f"{POD}/catalog.jsonld",
        "@id": f"{base}/data.json",
        "@type": "dcat:Catalog",
        "conformsTo": POD,
        "describedBy": f"{POD}/catalog.json",
        "dataset": datasets,
    }


@router.get("/v1/datasets/{dataset}.{fmt}", summary="Download a dataset (CSV or GeoJSON, streamed)",
            description="Downloads run on their own few database connections (CITYSENSE_API_EXPORT_CONCURRENCY per "
                        "worker); beyond them the answer is 503 with Retry-After. A download whose client stops "
                        "reading for CITYSENSE_API_EXPORT_IDLE_S is ended.",
            responses={200: {"content": {"text/csv": {}, "application/geo+json": {}}}, 404: doc("No such dataset"),
                       503: doc("Every download slot is taken: retry after the time Retry-After gives")})
async def download(
    request: Request,
    settings: SettingsDep,
    dataset: Annotated[str, Path(pattern=r"^[a-z0-9-]{1,40}$", description="One of the identifiers in /data.json.")],
    fmt: Annotated[Literal["csv", "geojson"], Path(description="csv or geojson")],
    start: Annotated[datetime | None, Query(description="Inclusive, RFC 3339 (default: end − 1 day).")] = None,
    end: Annotated[datetime | None, Query(description="Exclusive, RFC 3339 (default: now).")] = None,
    metric: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9_]+$", description="readings only")] = None,
    csa: CsaParam = None,
):
    ds = DATASETS.get(dataset)
    if ds is None:
        raise Problem(404, f"no dataset {dataset!r}; /data.json lists them")
    if csa is not None:
        resolve(csa, None, None)
    start, end = time_range(start, end, settings.api_max_export_days)
    sql, params = export_query(ds.id, ds.metrics, {"start": start, "end": end, "metric": metric, "csa": csa,
                                                   "tz": settings.timezone})
    stamp = f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}" if ds.timed else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M")
    filename = f"citysense-{ds.id}-{stamp}.{fmt}"
    slots: asyncio.Semaphore = request.app.state.exports
    if slots.locked():
        raise Problem(503, f"all {settings.api_export_concurrency} download slots are busy: try again shortly",
                      {"Retry-After": "30"})
    await slots.acquire()  # free (checked above), so this does not wait
    released = False

    def release() -> None:  # once: from the stream's end, or after a response whose stream never started
        nonlocal released
        if not released:
            released = True
            slots.release()

    pool = request.app.state.export_pool
    if fmt == "csv" and ds.id == "readings":  # the big one: PostgreSQL writes the CSV itself
        body = _copy_csv(pool, READINGS_CSV, params)
    else:
        body = _csv(pool, ds, sql, params) if fmt == "csv" else _geojson(pool, ds, sql, params)
    return StreamingResponse(_releasing(body, release),
                             media_type="text/csv; charset=utf-8" if fmt == "csv" else "application/geo+json",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'},
                             background=BackgroundTask(release))


async def _releasing(body, release):
    try:
        async for part in body:
            yield part
    finally:
        release()


async def _chunks(pool, ds, sql: str, params: dict):
    """Published rows from a server-side cursor, a chunk at a time: the export never holds more than
    one chunk, however many rows it streams."""
    async with pool.connection() as conn:
        async with conn.transaction():
            async with conn.cursor(name="export") as cur:
                cur.itersize = CHUNK_ROWS
                await cur.execute(sql, params)
                shape = None
                while True:
                    rows = await cur.fetchmany(CHUNK_ROWS)
                    if shape is None:
                        shape = formatter(ds, [c.name for c in cur.description])
                    if not rows:
                        return
                    yield [shape(r) for r in rows]


async def _copy_csv(pool, statement, params: dict):
    """COPY … TO STDOUT, forwarded as PostgreSQL sends it (blocks of rows): memory stays flat, and the API
    adds almost nothing to the database's own pace. psycopg binds the parameters client-side (COPY takes
    no server-side parameters), quoting each value as a literal."""
    async with pool.connection() as conn:
        async with conn.cursor().copy(statement, params) as copy:
            buf, size = [], 0
            async for block in copy:
                buf.append(bytes(block))
                size += len(block)
                if size >= 1 << 16:  # a few rows per block: send 64 KiB at a time
                    yield b"".join(buf)
                    buf, size = [], 0
            if buf:
                yield b"".join(buf)


def _cell(v):
    if isinstance(v, datetime):
        return v.isoformat().replace("+00:00", "Z")
    return v


async def _csv(pool, ds, sql, params):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ds.columns)
    async for chunk in _chunks(pool, ds, sql, params):
        w.writerows([[_cell(v) for v in row] for row in chunk])
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue().encode()


async def _geojson(pool, ds, sql, params):
    yield b'{"type":"FeatureCollection","features":['
    first = True
    async for chunk in _chunks(pool, ds, sql, params):
        parts = []
        for row in chunk:
            props = dict(zip(ds.columns, (_cell(v) for v in row)))
            parts.append(json.dumps({"type": "Feature", "geometry": geometry(ds, props), "properties": props},
                                    separators=(",", ":"), default=str))
        if parts:
            yield (("" if first else ",") + ",".join(parts)).encode()
            first = False
    yield b"]}"
