-- Daily rollups per Community Statistical Area, for long-range aggregates by city or CSA (a year of
-- daily buckets reads 55 × 365 rows per metric instead of millions of hourly ones).
--
-- The ingestor marks the days it touches in rollup_dirty_days, in the same transaction as the readings;
-- a rollup job recomputes those days from the hourly rollups about once a minute. A device that moves or
-- is decommissioned marks its days too, so each day is attributed to the CSAs its devices are in now.

CREATE TABLE readings_daily_csa (
    day         timestamptz NOT NULL,  -- midnight UTC, as time_bucket('1 day') aligns
    csa         text NOT NULL,
    metric_key  smallint NOT NULL,
    count       bigint NOT NULL,
    sum         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    energy      double precision,
    devices     integer NOT NULL,
    PRIMARY KEY (metric_key, day, csa)
);

CREATE TABLE rollup_dirty_days (
    day  timestamptz PRIMARY KEY
);
