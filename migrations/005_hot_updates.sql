-- Room on each page for HOT updates. Every batch rewrites the current hour's rollup rows and (at most
-- every 15 s per device) the last_seen of the devices it heard from; none of the updated columns is
-- indexed, so with free space on the page these updates stay on it instead of writing every index and
-- leaving bloat for vacuum. (A creeping ingest lag first blamed on this turned out to be stale broker
-- sessions of retired ingestors: see the README's design notes.)
ALTER TABLE readings_hourly SET (fillfactor = 70);
ALTER TABLE devices SET (fillfactor = 70);
