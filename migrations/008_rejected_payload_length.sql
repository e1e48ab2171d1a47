-- Rejected payloads are kept cut (CITYSENSE_INGEST_REJECTED_PAYLOAD_BYTES): their original length is kept
-- beside them, and their digest (the key) is of the whole payload.
ALTER TABLE rejected_messages ADD COLUMN payload_bytes integer;
UPDATE rejected_messages SET payload_bytes = octet_length(payload);
ALTER TABLE rejected_messages ALTER COLUMN payload_bytes SET NOT NULL;
