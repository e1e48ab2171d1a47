-- Each kept hour also holds the rest of the area's AQI answer (each pollutant's concentration, sub-index,
-- averaging and device), so that a past hour's AQI of one CSA (/v1/qol/aqi?csa=…&at=…) reads one row, as
-- the summary does, instead of every device's hours in the area (services/store/qol_history.py).
-- {pollutant: [concentration, aqi, averaging, device_id]} for the pollutants with a valid index; NULL on a
-- row with no valid index.
ALTER TABLE qol_hourly_csa ADD COLUMN pollutants jsonb;

-- The rows kept so far lack it: their days are computed again (until then those hours are computed on request).
INSERT INTO qol_dirty_days (day)
SELECT DISTINCT (bucket AT TIME ZONE 'UTC')::date + k FROM qol_hourly_csa, generate_series(-1, 1) AS k
ON CONFLICT DO NOTHING;
