-- Admin writes (device registration, changes, credentials, retirement, purge): when, which route,
-- which device, from which address, and the answer's status. Never the token or a password.
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    method    text NOT NULL CHECK (length(method) <= 10),
    path      text NOT NULL CHECK (length(path) <= 300),
    device_id text CHECK (length(device_id) <= 64),
    client    text CHECK (length(client) <= 100),
    status    smallint NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_device ON audit_log (device_id, at DESC) WHERE device_id IS NOT NULL;
