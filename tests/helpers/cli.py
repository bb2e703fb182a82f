"""The command line in-process (typer's runner), for tests of whole commands."""

from __future__ import annotations

from typer.testing import CliRunner

from stylesift.cli.main import app

runner = CliRunner()


def run(*args):
    """``stylesift ARGS…`` in-process; every argument is passed as ``str``."""
    return runner.invoke(app, [str(a) for a in args])
