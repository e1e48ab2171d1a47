-- Device lifecycle, local days and exactly-once rejections.
--
-- 1. Devices are retired, not deleted: published history stays. A retired device's readings are refused
--    at write time (the ingestor records them as unknown_device). Hard deletion (purge) stays possible.
-- 2. Placements: where a device was, and when. A device that moves keeps its past in its old area: every
--    area-level figure attributes a reading or an hourly bucket to the placement valid at its time. A
--    device's first placement starts at -infinity (a backlog may predate its registration).
-- 3. Daily rollups per CSA are by the city's local day (a date; DST days have 23 or 25 hours), as every
--    other daily figure is. The dirty-day marks are local dates too.
-- 4. A rejected message is stored once: its key is (sha256 of topic, NUL, payload; reason). A message
--    that arrives again (a redelivery, or the same bytes sent again) adds to `times`.

ALTER TABLE devices ADD COLUMN retired_at timestamptz;

CREATE TABLE device_placements (
    device_key     integer NOT NULL REFERENCES devices (device_key) ON DELETE CASCADE,
    valid_from     timestamptz NOT NULL,
    valid_to       timestamptz,
    latitude       double precision NOT NULL,
    longitude      double precision NOT NULL,
    neighbourhood  text NOT NULL,
    csa            text NOT NULL,
    PRIMARY KEY (device_key, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX device_placements_csa_idx ON device_placements (csa);
INSERT INTO device_placements (device_key, valid_from, valid_to, latitude, longitude, neighbourhood, csa)
SELECT device_key, '-infinity', NULL, latitude, longitude, neighbourhood, csa FROM devices;

-- The placement rule, once: hourly buckets and raw readings with the area they belong to.
CREATE VIEW hourly_placed AS
SELECT h.bucket, h.device_key, h.metric_key, h.count, h.sum, h.min, h.max, h.energy,
       p.csa, p.neighbourhood, p.latitude, p.longitude
FROM readings_hourly h
JOIN device_placements p ON p.device_key = h.device_key AND h.bucket >= p.valid_from
                         AND (p.valid_to IS NULL OR h.bucket < p.valid_to);

CREATE VIEW readings_placed AS
SELECT r.time, r.device_key, r.metric_key, r.value, r.flags,
       p.csa, p.neighbourhood, p.latitude, p.longitude
FROM readings r
JOIN device_placements p ON p.device_key = r.device_key AND r.time >= p.valid_from
                         AND (p.valid_to IS NULL OR r.time < p.valid_to);

-- Local days. The new tables start empty; every date that may hold data is marked dirty (UTC dates and
-- their neighbours cover the local dates of any zone), and the rollup job recomputes them.
DROP TABLE readings_daily_csa;
DROP TABLE rollup_dirty_days;
CREATE TABLE readings_daily_csa (
    day         date NOT NULL,  -- the city's local calendar day
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
    day  date PRIMARY KEY
);
INSERT INTO rollup_dirty_days (day)
SELECT DISTINCT d FROM (
    SELECT (bucket AT TIME ZONE 'UTC')::date + k AS d FROM readings_hourly, generate_series(-1, 1) AS k
) days
ON CONFLICT DO NOTHING;

-- Rejected messages: a plain table with a key (a hypertable's unique keys must include its time, and a
-- redelivery arrives at another time). Retention deletes by last receipt.
CREATE TABLE rejected_messages_keyed (
    digest            bytea NOT NULL,
    reason            text NOT NULL,
    received_at       timestamptz NOT NULL,  -- first receipt
    last_received_at  timestamptz NOT NULL,
    times             integer NOT NULL DEFAULT 1 CHECK (times > 0),
    topic             text NOT NULL,
    device_id         text,
    payload           bytea NOT NULL,
    detail            text NOT NULL,
    PRIMARY KEY (digest, reason)
);
INSERT INTO rejected_messages_keyed (digest, reason, received_at, last_received_at, times, topic, device_id, payload, detail)
SELECT sha256(convert_to(topic, 'UTF8') || '\x00'::bytea || payload), reason, min(received_at), max(received_at),
       count(*), (array_agg(topic))[1], (array_agg(device_id))[1], (array_agg(payload))[1], (array_agg(detail))[1]
FROM rejected_messages
GROUP BY 1, 2;
DROP TABLE rejected_messages;
ALTER TABLE rejected_messages_keyed RENAME TO rejected_messages;
ALTER TABLE rejected_messages RENAME CONSTRAINT rejected_messages_keyed_pkey TO rejected_messages_pkey;
CREATE INDEX rejected_messages_last_received_idx ON rejected_messages (last_received_at);
CREATE INDEX rejected_messages_reason_idx ON rejected_messages (reason, received_at DESC);
CREATE INDEX rejected_messages_device_idx ON rejected_messages (device_id, received_at DESC);
