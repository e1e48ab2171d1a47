-- Hourly rollups of the whole city, for hourly aggregates by city: a month of the city's hours reads one
-- row an hour instead of one per CSA. Kept like the CSA rows (migration 010): the rollup job recomputes
-- the hours of every local day marked in rollup_dirty_days in the same transaction; a reader takes the
-- hours of days still marked from hourly_placed (services/store/aggregates.py).

CREATE TABLE readings_hourly_city (
    metric_key  smallint NOT NULL,
    bucket      timestamptz NOT NULL,
    count       bigint NOT NULL,
    sum         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    energy      double precision,
    devices     integer NOT NULL,
    PRIMARY KEY (metric_key, bucket)
);

INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT d FROM (
    SELECT (bucket AT TIME ZONE 'UTC')::date + k AS d FROM readings_hourly, generate_series(-1, 1) AS k
) days
ON CONFLICT DO NOTHING;
