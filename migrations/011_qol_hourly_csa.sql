-- Each CSA's quality-of-life figures at every past hour, for past hours' city-wide summaries: 55 rows an
-- hour instead of every air-quality device's index and every noise device's hours read on request. Kept
-- by the API's background job from the marks in qol_dirty_days, which the rollup job sets (a day it
-- recomputed, and the day after: an hour's figures read up to 24 hours back). A reader takes an hour from
-- here only when neither its day is marked here nor its day or the day before in rollup_dirty_days;
-- otherwise it computes the hour from the hourly rollups (services/store/qol_history.py).

CREATE TABLE qol_hourly_csa (
    bucket          timestamptz NOT NULL,  -- the latest complete hour the figures are for
    csa             text NOT NULL,
    aqi             smallint,              -- NULL: no valid index (no pollutant has the hours EPA requires)
    category        text,
    main_pollutant  text,
    noise_energy    double precision,      -- the 24 hours' mean of hourly energy means, Σ 10^(L/10) / n
    PRIMARY KEY (bucket, csa),
    CHECK (aqi IS NOT NULL OR noise_energy IS NOT NULL)
);

CREATE TABLE qol_dirty_days (
    day date PRIMARY KEY  -- the city's local day
);

-- Every local day that may hold data, and the day after (UTC dates and their neighbours cover the local
-- dates of any zone); until the job has done them readers compute those hours on request.
INSERT INTO qol_dirty_days (day)
SELECT DISTINCT d FROM (
    SELECT (bucket AT TIME ZONE 'UTC')::date + k AS d FROM readings_hourly, generate_series(-1, 2) AS k
) days
ON CONFLICT DO NOTHING;
