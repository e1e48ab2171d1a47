-- Receipts of messages whose readings carry no device time: such readings take the ingestor's delivery
-- time, so a redelivered copy (MQTT DUP flag) must take its first delivery's time to be stored once. Kept
-- as long as the broker may redeliver (the ingestor's session expiry); retention deletes older ones.
CREATE TABLE message_receipts (
    digest       bytea PRIMARY KEY,  -- sha256 of topic, NUL, payload
    received_at  timestamptz NOT NULL
);
CREATE INDEX message_receipts_received_idx ON message_receipts (received_at);
