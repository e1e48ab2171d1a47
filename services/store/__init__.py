"""The store: the one owner of the database. Every SQL statement and every rule about the shared tables
(readings and their hourly and daily rollups, dirty days, last_seen, device placements and retirement,
rejected messages, retention) lives here, behind typed functions; the ingestor and the API call them and
build no SQL. Imports only ``services.core``."""
