"""The layers keep to their places: core imports no service; the store owns every SQL statement; the
ingestor and the API never import each other; only the launcher imports everything."""

from __future__ import annotations

import ast
import re

from tests.helpers import REPO

#: package → the citysense packages its modules may import
ALLOWED = {
    "core": {"core"},
    "store": {"core", "store"},
    "broker": {"core", "broker"},
    "ingest": {"core", "store", "broker", "ingest"},
    "api": {"core", "store", "broker", "api"},
    "simulators": {"core", "store", "broker", "simulators"},
    "launcher": {"core", "store", "broker", "ingest", "api", "simulators", "launcher"},
}
#: SQL as this project writes it: keywords in capitals (prose says "select" and "from" too), plus the
#: database functions only SQL calls.
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|ROLE|DATABASE|"
                 r"EXTENSION|INDEX)|ALTER\s+TABLE|DROP\s+(TABLE|DATABASE)|COPY\s+\w+\s+(FROM|TO))\b|\b(drop_chunks|pg_advisory_\w+|"
                 r"time_bucket)\(", re.S)


def _modules():
    for path in [*REPO.glob("services/**/*.py"), *REPO.glob("simulators/**/*.py")]:
        rel = path.relative_to(REPO).parts
        package = rel[1] if rel[0] == "services" else "simulators"
        if package.endswith(".py"):  # services/__init__.py
            continue
        yield package, path, ast.parse(path.read_text(), str(path))


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "services" and len(parts) > 1:
                out.add(parts[1])
            elif parts[0] in ("simulators", "benchmarks", "tests"):
                out.add(parts[0])
    return out


def test_each_package_imports_only_what_it_may():
    wrong = []
    for package, path, tree in _modules():
        if package in ("migrations", "deploy"):
            continue
        extra = _imports(tree) - ALLOWED[package]
        if extra:
            wrong.append(f"{path.relative_to(REPO)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_no_sql_outside_the_store():
    found = []
    for package, path, tree in _modules():
        if package == "store":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert not found, "SQL outside services/store:\n" + "\n".join(found)


def test_the_lint_finds_sql():
    assert SQL.search("SELECT device_key FROM devices WHERE x") and SQL.search("INSERT INTO readings VALUES")
    assert not SQL.search("select a device from the list")
