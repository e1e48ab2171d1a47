-- Each CSA's AQI at every past hour, for past hours' city-wide summaries: 55 rows an hour instead of
-- every air-quality device's index computed on request. Kept by the API's background job from the marks
-- in aqi_dirty_days, which the rollup job sets (a day it recomputed, and the day after: an hour's index
-- reads up to 24 hours back). A reader takes an hour from here only when neither its day is marked here
-- nor its day or the day before in rollup_dirty_days; otherwise it computes the hour from the hourly
-- rollups (services/store/aqi_history.py). Only areas with a valid index have a row.

CREATE TABLE aqi_hourly_csa (
    bucket          timestamptz NOT NULL,  -- the latest complete hour the index is for
    csa             text NOT NULL,
    aqi             smallint NOT NULL,
    category        text NOT NULL,
    main_pollutant  text NOT NULL,
    PRIMARY KEY (bucket, csa)
);

CREATE TABLE aqi_dirty_days (
    day date PRIMARY KEY  -- the city's local day
);

-- Every local day that may hold data, and the day after (UTC dates and their neighbours cover the local
-- dates of any zone); until the job has done them readers compute those hours on request.
INSERT INTO aqi_dirty_days (day)
SELECT DISTINCT d FROM (
    SELECT (bucket AT TIME ZONE 'UTC')::date + k AS d FROM readings_hourly, generate_series(-1, 2) AS k
) days
ON CONFLICT DO NOTHING;
