-- Weekly chunks for raw readings and rejected messages (was daily). A city fleet writes tens of MB a
-- day; daily chunks made a year 365 chunks, and planning a query over them cost ~9 ms against ~1 ms of
-- execution (measured by the API benchmark). Weekly chunks still fit in memory many times over and
-- keep retention (drop_chunks) fine-grained. Applies to chunks created from now on.
SELECT set_chunk_time_interval('readings', INTERVAL '7 days');
SELECT set_chunk_time_interval('rejected_messages', INTERVAL '7 days');
