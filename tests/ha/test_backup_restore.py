"""A backup restored, once, with the real tool: pgBackRest (Debian) takes a full backup of a citysense
database while it archives its WAL; readings written after the backup are recovered from the archive;
the restored cluster starts, and holds every reading (the README's operations section)."""

from __future__ import annotations

import os
import time
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from services.launcher.stack import PostgresCluster, free_port, owned_dir
from services.store.migrate import migrate
from tests.helpers import count, register_device, unique, wait_until

pytestmark = pytest.mark.ha
PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"


def as_postgres(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=300)


def insert(dsn: str, device: str, start: int, n: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO readings (time, device_key, metric_key, value) "
                     "SELECT now() - interval '2 hours' + i * interval '1 s', d.device_key, m.metric_key, i "
                     "FROM devices d, metrics m, generate_series(%s::int, %s::int) i WHERE d.device_id = %s AND m.metric = 'pm25'",
                     (start, start + n - 1, device))


def _in_recovery(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            return conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError:
        return True


def test_a_backup_is_restored_with_the_readings_written_after_it(workdir):
    if not Path(PGBACKREST).exists():
        pytest.fail("pgbackrest is needed (deploy/local/install.sh installs it)")
    root = owned_dir(workdir, unique("backup"), "postgres")
    os.chmod(root, 0o755)
    sockets, repo, conf = root / "sockets", root / "repo", root / "pgbackrest.conf"
    for d in (sockets, repo, root / "log", root / "lock", root / "spool"):
        d.mkdir()
        shutil.chown(d, "postgres", "postgres")
    cluster = PostgresCluster(owned_dir(root, "pg", "postgres"), free_port(), root / "secrets")
    cluster.init()
    conf.write_text(f"[global]\nrepo1-path={repo}\nrepo1-retention-full=2\nstart-fast=y\nlog-path={root / 'log'}\nlock-path={root / 'lock'}\n"
                    f"spool-path={root / 'spool'}\nlog-level-console=warn\n\n"
                    f"[citysense]\npg1-path={cluster.data_dir}\npg1-port={cluster.port}\npg1-socket-path={sockets}\n")
    shutil.chown(conf, "postgres", "postgres")
    with open(cluster.data_dir / "postgresql.conf", "a") as f:
        # pgBackRest talks to the server over a local socket, as the postgres user (peer, below)
        f.write(f"unix_socket_directories = '{sockets}'\narchive_mode = on\n"
                f"archive_command = '{PGBACKREST} --config={conf} --stanza=citysense archive-push %p'\n")
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text("local all postgres peer\n" + hba.read_text())
    cluster.start()
    try:
        migrate(cluster.dsn)
        device = unique("bk")
        register_device(cluster.dsn, device)
        insert(cluster.dsn, device, 0, 1000)
        pgbr = [PGBACKREST, f"--config={conf}", "--stanza=citysense"]
        for step in (["stanza-create"], ["check"], ["--type=full", "backup"]):
            t = time.monotonic()
            r = as_postgres(*pgbr, *step)
            print(step, round(time.monotonic() - t, 1), "s")
            assert r.returncode == 0, (step, r.stdout, r.stderr)
        insert(cluster.dsn, device, 1000, 500)  # after the backup: only in the WAL archive
        r = as_postgres(*pgbr, "check")  # switches WAL and waits until it is archived
        assert r.returncode == 0, r.stderr
        assert count(cluster.dsn, "SELECT count(*) FROM readings") == 1500
        # the machine is lost: the data directory is gone
        cluster.stop("immediate")
        shutil.rmtree(cluster.data_dir)
        cluster.data_dir.mkdir()
        shutil.chown(cluster.data_dir, "postgres", "postgres")
        os.chmod(cluster.data_dir, 0o700)
        r = as_postgres(*pgbr, "restore")
        assert r.returncode == 0, r.stdout + r.stderr
        # started as it comes back: it replays the archive, then takes writes again
        r = as_postgres(str(cluster.pg_bin / "pg_ctl"), "start", "-w", "-D", str(cluster.data_dir), "-l",
                        str(cluster.log_file), "-o", f"-p {cluster.port}")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: not _in_recovery(cluster.superuser_dsn), 120, interval=0.5, what="recovery to end")
        # every reading: those in the backup, and those replayed from the archive
        assert count(cluster.dsn, "SELECT count(*) FROM readings") == 1500
        assert count(cluster.dsn, "SELECT max(value) FROM readings") == 1499
    finally:
        cluster.stop("immediate")
