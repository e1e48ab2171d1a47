"""Is a device reporting? One definition, for /v1/status/freshness, the summary's coverage and the
ingestor's fleet metrics.

A device is silent when its last reading is older than twice its reporting interval plus SLACK_S: the
ingestor writes last_seen at most every LAST_SEEN_STEP_S (15 s) per device, and commits a batch a moment
after receipt, so a device reporting every few seconds must not flap to "silent" between two writes.
"""

from __future__ import annotations

from services.store.ingest import LAST_SEEN_STEP_S

SLACK_S = LAST_SEEN_STEP_S + 5.0


def reporting_sql(alias: str = "d", now: str = "now()") -> str:
    """A SQL condition (no parameters) true for a device that is reporting at ``now``."""
    return (f"({alias}.last_seen IS NOT NULL AND "
            f"{alias}.last_seen >= {now} - (2 * {alias}.interval_s + {SLACK_S:g}) * interval '1 second')")


FLEET_COUNTS = f"""
SELECT count(*), count(*) FILTER (WHERE NOT {reporting_sql()})
FROM devices d WHERE d.retired_at IS NULL
"""
