"""``flask odm import FILE [--dry-run] [--create-users]``: the ClinicalData of an ODM 1.3.2 file
into this study, for the system operator only (PROTOCOL 2: no upload page). docs/odm_import.md.

The lead registers it on the ``odm`` group: ``odm_cli.add_command(odm_import)``."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .importer import ImportRefused, import_odm


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option(
    "--create-users",
    is_flag=True,
    help="Create the file's AdminData users (disabled until an admin sets their password) and sites.",
)
@with_appcontext
def odm_import(file: str, dry_run: bool, create_users: bool) -> None:
    """Import the ClinicalData of an ODM 1.3.2 file (one transaction: all or nothing)."""
    try:
        report = import_odm(file, dry_run=dry_run, create_users=create_users)
    except ImportRefused as error:
        click.echo(error.report(), err=True)
        click.echo("Nothing was imported.", err=True)
        sys.exit(2)
    for line in report.lines():
        click.echo(line)
