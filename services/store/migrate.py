"""Apply the numbered SQL files in ``migrations/`` in order, once each.

Applied versions are recorded in ``schema_migrations``. A session-level advisory lock serialises
concurrent runners (two services starting together): the second waits, then finds nothing to do.
Each file runs in its own transaction, so a failing migration leaves the schema at the previous version.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

log = logging.getLogger("citysense.migrate")

#: Arbitrary but fixed: the key of the advisory lock every migration runner takes.
LOCK_KEY = 0x63697479  # "city"
#: The repository's migrations/ directory, installed as the package services.migrations.
MIGRATIONS = files("services.migrations")
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    """The migrations cannot be applied as they are: the message says why."""


def discover(directory: Traversable = MIGRATIONS) -> list[Migration]:
    """The migration files in version order. Raises MigrationError when there are none: an install
    that lost its schema files must not report "up to date" against an empty database."""
    found = []
    for path in sorted((p for p in directory.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is not named NNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    if not found:
        raise MigrationError(f"no migration files (NNN_name.sql) found in {directory}: the installation is incomplete")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def migrate(dsn: str, directory: Traversable = MIGRATIONS) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    migrations = discover(directory)
    applied_now: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")}
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum:
                        log.warning("migration %03d_%s changed after it was applied", m.version, m.name)
                    continue
                log.info("applying migration %03d_%s", m.version, m.name)
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied_now


def bootstrap(superuser_dsn: str, password: str, role: str = "citysense", database: str = "citysense") -> None:
    """Create the role, its database and the TimescaleDB extension, when missing (a local or test cluster;
    elsewhere a DBA does this once). The extension needs a superuser; the services then connect as the
    unprivileged owner, which runs the migrations."""
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    with psycopg.connect(superuser_dsn.rsplit("/", 1)[0] + "/" + database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")


def create_database(superuser_dsn: str, name: str, owner: str = "citysense") -> str:
    """A new, empty database with TimescaleDB, owned by ``owner`` (tests); its URL for the superuser."""
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    url = superuser_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
    return url


async def applied_versions(conn) -> set[int]:
    """The migrations applied to the database (raises psycopg.errors.UndefinedTable on an empty one)."""
    return {r[0] for r in await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()}
