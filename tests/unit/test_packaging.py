"""What the wheel carries is what the product needs: every package, the schema, the broker template,
the fleet and the boundaries, found through importlib.resources (never relative to a checkout)."""

from __future__ import annotations

import tomllib

import pytest

from services.core import areas
from services.launcher import stack
from services.store import migrate
from simulators import fleet
from tests.helpers import REPO


def test_every_package_directory_is_in_the_wheel():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {v: k for k, v in config["package-dir"].items()}
    on_disk = set()
    for init in [*REPO.glob("services/**/__init__.py"), *REPO.glob("simulators/**/__init__.py"),
                 *(REPO / d / "__init__.py" for d in mapped)]:
        rel = init.parent.relative_to(REPO).as_posix()
        on_disk.add(mapped.get(rel, rel.replace("/", ".")))
    # listed data directories (no __init__.py: boundaries, static files, deploy's units) must exist and hold files
    where = {name: _directory(name, config["package-dir"]) for name in listed - on_disk}
    data = {name for name, d in where.items() if d.is_dir() and not (d / "__init__.py").exists()}
    assert all(any(p.is_file() for p in where[name].iterdir()) for name in data)
    assert on_disk == listed - data, \
        f"pyproject.toml [tool.setuptools] packages: missing {on_disk - listed}, stale {listed - on_disk - data}"


def _directory(package: str, package_dir: dict[str, str]):
    """Where a dotted package name lives in the checkout, through [tool.setuptools.package-dir]."""
    for prefix, where in sorted(package_dir.items(), key=lambda kv: -len(kv[0])):
        if package == prefix or package.startswith(prefix + "."):
            return REPO / where / package[len(prefix) + 1:].replace(".", "/")
    return REPO / package.replace(".", "/")


def test_resources_are_found_as_package_data():
    versions = [m.version for m in migrate.discover()]
    assert versions == sorted(versions) and versions[0] == 1
    assert "{listeners}" in stack.MOSQUITTO_TEMPLATE.read_text()
    assert len(fleet.load_fleet()) >= 500
    city = areas.baltimore()
    assert len(city.csas) == 55 and len(city.neighbourhoods) == 278


def test_migrate_refuses_a_directory_without_migrations(tmp_path):
    with pytest.raises(migrate.MigrationError, match="no migration files"):
        migrate.discover(tmp_path)
    with pytest.raises(migrate.MigrationError, match="no migration files"):
        migrate.migrate("postgresql://nobody@127.0.0.1:1/none", tmp_path)  # refused before connecting
