-- Hourly rollups per Community Statistical Area, for hourly aggregates by city or CSA over long windows:
-- a month of a city's hours reads 55 rows an hour instead of one per device. Kept like the daily ones:
-- the rollup job recomputes the hours of every local day marked in rollup_dirty_days, in the same
-- transaction as that day's daily rows; a reader takes the hours of days still marked from hourly_placed,
-- so an answer never lags the hourly rollups (services/store/aggregates.py).

CREATE TABLE readings_hourly_csa (
    bucket      timestamptz NOT NULL,
    csa         text NOT NULL,
    metric_key  smallint NOT NULL,
    count       bigint NOT NULL,
    sum         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    energy      double precision,
    devices     integer NOT NULL,
    PRIMARY KEY (metric_key, bucket, csa)
);

-- Every local day that may hold data is recomputed by the rollup job (UTC dates and their neighbours
-- cover the local dates of any zone); until then readers take those days from hourly_placed.
INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT d FROM (
    SELECT (bucket AT TIME ZONE 'UTC')::date + k AS d FROM readings_hourly, generate_series(-1, 1) AS k
) days
ON CONFLICT DO NOTHING;
