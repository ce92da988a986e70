"""``flask odm export``: the study as a CDISC ODM 1.3.2 file, for the system operator (all
sites; audited as the system)."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from ...auth.policy import ALL_SITES
from ...records import service as records
from .routes import audit_export
from .import_cli import odm_import
from .writer import GRANULARITIES, MODES, OdmError, write_odm

odm_cli = AppGroup("odm", help="CDISC ODM 1.3.2 export and import.")
odm_cli.add_command(odm_import)


@odm_cli.command("export")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--mode", type=click.Choice(MODES), default="snapshot", show_default=True)
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="AllClinicalData", show_default=True)
@click.option("--site", help="Site code (SingleSite).")
@click.option("--subject", help="Subject number (SingleSubject).")
def odm_export(output: str, mode: str, granularity: str, site: str | None, subject: str | None) -> None:
    """Write the study (every site) as one ODM 1.3.2 document, streamed."""
    if site and granularity == "AllClinicalData":
        granularity = "SingleSite"
    if subject and granularity == "AllClinicalData":
        granularity = "SingleSubject"
    with records.transaction():  # audited before the file is written, as the pages do
        audit_export(
            None, mode, granularity, ALL_SITES, site=site, subject=subject, file=output, via="flask odm export"
        )
    try:
        with open(output, "wb") as out:
            counts = write_odm(out, sites=ALL_SITES, mode=mode, granularity=granularity, site=site, subject=subject)
    except OdmError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    click.echo(
        f"ODM {mode} ({granularity}) written to {output}: {counts['subjects']} subjects, {counts['forms']} forms, "
        f"{counts['item_data']} item values, {counts['audit_records']} audit records."
    )
