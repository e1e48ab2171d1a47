"""The README's settings table is what `citysense settings` prints: the two cannot drift."""

import contextlib
import io

from services.launcher import cli
from tests.helpers import REPO


def test_readme_settings_table_is_generated_from_the_settings():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli.cmd_settings(None)
    table = out.getvalue().strip()
    readme = (REPO / "README.md").read_text()
    assert table in readme, "README.md's settings table is stale: paste the output of `citysense settings`"
