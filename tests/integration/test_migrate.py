"""Migrations: applied once, recorded, safe when two services start together."""

import threading

import psycopg

from services.store.migrate import discover, migrate


def test_schema_is_recorded_and_rerun_is_a_no_op(dsn):
    assert migrate(dsn) == []
    with psycopg.connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        hypertables = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        metrics = dict(conn.execute("SELECT metric, unit FROM metrics"))
    assert versions == [m.version for m in discover()]
    assert {"readings", "readings_hourly"} <= hypertables
    with psycopg.connect(dsn) as conn:  # rejected messages have a key: stored once (a plain table)
        key = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'rejected_messages_pkey'"
                           ).fetchone()[0]
    assert key == "PRIMARY KEY (digest, reason)"
    assert metrics["pm25"] == "µg/m³" and metrics["noise_laeq"] == "dB(A)" and len(metrics) == 12


def test_two_runners_at_once_apply_each_migration_once(pg):
    with psycopg.connect(pg.superuser_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS race")
        conn.execute("CREATE DATABASE race OWNER citysense")
    with psycopg.connect(pg.superuser_dsn.rsplit("/", 1)[0] + "/race", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    race = pg.dsn.rsplit("/", 1)[0] + "/race"
    results, errors = [], []

    def run():
        try:
            results.append(migrate(race))
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(map(len, results)) == [0, 0, len(discover())]
