-- Schema v1: devices, the metric catalogue, readings (a hypertable), their hourly rollups and the
-- messages the ingestor could not store.
--
-- Readings carry small integer keys for the device and metric, not their text ids: a reading row is
-- then 30 bytes instead of ~60, which halves the hypertable and its primary-key index, and the
-- ingestor already resolves ids to keys when it validates a message.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE metrics (
    metric_key   smallint PRIMARY KEY,
    metric       text NOT NULL UNIQUE,
    unit         text NOT NULL,
    description  text NOT NULL,
    min_value    double precision NOT NULL,
    max_value    double precision NOT NULL,
    -- How readings of the metric combine over time: arithmetic mean, energy mean (decibels), or sum.
    aggregation  text NOT NULL CHECK (aggregation IN ('mean', 'energy', 'sum')),
    CHECK (min_value < max_value)
);

INSERT INTO metrics (metric_key, metric, unit, description, min_value, max_value, aggregation) VALUES
    (1,  'pm25',          'µg/m³',    'Fine particulate matter (PM2.5)',            0,    1000,  'mean'),
    (2,  'pm10',          'µg/m³',    'Coarse particulate matter (PM10)',           0,    2000,  'mean'),
    (3,  'o3',            'ppb',      'Ozone',                                      0,    1000,  'mean'),
    (4,  'no2',           'ppb',      'Nitrogen dioxide',                           0,    3000,  'mean'),
    (5,  'co',            'ppm',      'Carbon monoxide',                            0,    200,   'mean'),
    (6,  'so2',           'ppb',      'Sulphur dioxide',                            0,    2000,  'mean'),
    (7,  'noise_laeq',    'dB(A)',    'A-weighted equivalent sound level',          20,   140,   'energy'),
    (8,  'temperature',   '°C',       'Air temperature',                            -40,  60,    'mean'),
    (9,  'humidity',      '%',        'Relative humidity',                          0,    100,   'mean'),
    (10, 'traffic_count', 'vehicles', 'Vehicles counted in the reporting interval', 0,    10000, 'sum'),
    (11, 'water_level',   'm',        'Water level above the gauge datum',          -5,   20,    'mean'),
    (12, 'rainfall',      'mm',       'Rainfall in the reporting interval',         0,    300,   'sum');

CREATE TABLE devices (
    device_key     integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    device_id      text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    kind           text NOT NULL CHECK (kind IN ('air_quality', 'noise', 'weather', 'traffic', 'water')),
    latitude       double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude      double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    neighbourhood  text NOT NULL,
    csa            text NOT NULL,
    installed      timestamptz NOT NULL DEFAULT now(),
    -- Seconds between two reports when the device is healthy; freshness is judged against it.
    interval_s     integer NOT NULL DEFAULT 60 CHECK (interval_s > 0),
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status         text NOT NULL DEFAULT 'unknown' CHECK (status IN ('online', 'offline', 'unknown')),
    status_at      timestamptz,
    last_seen      timestamptz
);
CREATE INDEX devices_csa_idx ON devices (csa, device_id);
CREATE INDEX devices_neighbourhood_idx ON devices (neighbourhood, device_id);
CREATE INDEX devices_kind_idx ON devices (kind, device_id);

CREATE TABLE readings (
    time        timestamptz NOT NULL,
    device_key  integer NOT NULL,
    metric_key  smallint NOT NULL,
    value       double precision NOT NULL,
    -- Bit 1: the device sent no time; `time` is when the broker's message reached the ingestor.
    flags       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_key, metric_key, time)
);
SELECT create_hypertable('readings', 'time', chunk_time_interval => interval '1 day');
CREATE INDEX readings_metric_time_idx ON readings (metric_key, time DESC);

-- Hourly rollups, kept by the ingestor in the same transaction as the raw rows (the Apache edition has
-- no continuous aggregates). `energy` is Σ 10^(v/10), kept only for metrics that aggregate as energy,
-- so that decibels average as energy: 10·log10(energy / count).
CREATE TABLE readings_hourly (
    bucket      timestamptz NOT NULL,
    device_key  integer NOT NULL,
    metric_key  smallint NOT NULL,
    count       bigint NOT NULL,
    sum         double precision NOT NULL,
    min         double precision NOT NULL,
    max         double precision NOT NULL,
    energy      double precision,
    PRIMARY KEY (device_key, metric_key, bucket)
);
SELECT create_hypertable('readings_hourly', 'bucket', chunk_time_interval => interval '30 days');
CREATE INDEX readings_hourly_metric_bucket_idx ON readings_hourly (metric_key, bucket DESC);

CREATE TABLE rejected_messages (
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    device_id    text,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL
);
SELECT create_hypertable('rejected_messages', 'received_at', chunk_time_interval => interval '1 day');
CREATE INDEX rejected_messages_reason_idx ON rejected_messages (reason, received_at DESC);
