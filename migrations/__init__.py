"""The schema, as numbered SQL files (NNN_name.sql) applied in order by ``citysense migrate``.

This directory is packaged as ``services.migrations`` (see pyproject.toml), so an installed wheel
carries the files and finds them with importlib.resources, wherever it is installed.
"""
