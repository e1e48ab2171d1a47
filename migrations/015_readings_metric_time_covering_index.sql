-- Raw readings of one metric over a time range (aggregates in buckets shorter than an hour, a metric's
-- page, the summary's latest weather) read its rows by (metric_key, time); in the table the readings of a
-- metric lie one to a page among the other metrics', so the planner preferred the time index and filtered
-- out eleven rows in twelve. With the value in the index the read is an index-only scan: three days of one
-- metric by city in 15-minute buckets went from 25-35 ms to 10 ms of execution on the benchmark's database
-- (20 M readings), where building the index took 15 s. The new index is built first (writes wait while it
-- builds, reads do not), then the old one is dropped, whose lock on the table is held only to the commit.
CREATE INDEX readings_metric_time_value_idx ON readings (metric_key, time DESC) INCLUDE (value);
DROP INDEX readings_metric_time_idx;
