"""``mlci exit-codes``: the documented exit codes."""

from __future__ import annotations

import click

from mlci import errors
from mlci.cli.app import main


@main.command(name="exit-codes")
def exit_codes() -> None:
    """List the documented exit codes."""
    for code, meaning in errors.EXIT_CODES.items():
        click.echo(f"{code}\t{meaning}")
