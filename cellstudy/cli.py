"""flask commands: users, audit verification, the demo study."""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .auth import service as auth
from .adverse_events.loader import load
from .records.audit import verify
from .amendments.service import apply_due
from .settings import study_in_force
from .demo import DEMO_PASSWORD, DEMO_USERS, load_demo

users_cli = AppGroup("users", help="Manage user accounts (audited).")
audit_cli = AppGroup("audit", help="Audit trail tools.")
sites_cli = AppGroup("sites", help="Manage sites.")
demo_cli = AppGroup("demo", help="The demo study.")
ctcae_cli = AppGroup("ctcae", help="The CTCAE v5.0 dictionary.")


@ctcae_cli.command("load")
def ctcae_load():
    """Load the shipped CTCAE v5.0 dictionary into the database (idempotent)."""
    total, inserted, updated = load()
    click.echo(f"CTCAE v5.0: {total} terms ({inserted} inserted, {updated} updated).")


def _fail(error: Exception):
    click.echo(f"Error: {error}", err=True)
    sys.exit(2)


@users_cli.command("create")
@click.argument("username")
@click.option("--name", "full_name", required=True, help="Printed name (used on signatures).")
@click.option(
    "--role", required=True, type=click.Choice(["coordinator", "investigator", "monitor", "data_manager", "admin"])
)
@click.option("--site", "sites", multiple=True, help="Site code; repeat for several sites.")
@click.password_option(help="At least 12 characters.")
def users_create(username, full_name, role, sites, password):
    try:
        auth.create_user(username, full_name, role, password, list(sites))
    except auth.AuthError as error:
        _fail(error)
    click.echo(f"Created {username} ({role}).")


@users_cli.command("set-role")
@click.argument("username")
@click.argument("role")
def users_set_role(username, role):
    try:
        auth.set_role(username, role)
    except auth.AuthError as error:
        _fail(error)
    click.echo(f"{username} is now {role}.")


@users_cli.command("assign-site")
@click.argument("username")
@click.argument("site_code")
@click.option("--remove", is_flag=True, help="Remove the assignment instead.")
def users_assign_site(username, site_code, remove):
    try:
        user = auth.assign_site(username, site_code, remove=remove)
    except auth.AuthError as error:
        _fail(error)
    click.echo(f"{username}: sites {', '.join(s.code for s in user.sites) or 'none'}.")


@users_cli.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Re-enable the account instead.")
def users_disable(username, enable):
    try:
        auth.set_active(username, enable)
    except auth.AuthError as error:
        _fail(error)
    click.echo(f"{username} {'enabled' if enable else 'disabled'}.")


@sites_cli.command("create")
@click.argument("code")
@click.argument("name")
@click.option("--timezone", default="UTC")
def sites_create(code, name, timezone):
    auth.create_site(code.upper(), name, timezone)
    click.echo(f"Site {code.upper()} created.")


@audit_cli.command("verify")
def audit_verify():
    """Walk the hash chain; exit 1 naming the first record that does not match."""
    result = verify()
    if result.ok:
        click.echo(f"Audit trail intact: {result.checked} records verified.")
        return
    click.echo(
        f"AUDIT TRAIL BROKEN at record {result.first_bad_id}: {result.problem} "
        f"({result.checked} records before it verified).",
        err=True,
    )
    sys.exit(1)


@demo_cli.command("load")
def demo_load():
    """Load the demo study once (sites, users of every role, subjects at several stages)."""
    if not current_app.config.get("LOAD_DEMO_ALLOWED"):
        _fail(RuntimeError("the demo study is never loaded in production"))
    if not load_demo():
        click.echo("Demo study already loaded.")
    click.echo("Demo logins (password for all: %s):" % DEMO_PASSWORD)
    for username, _name, role, sites in DEMO_USERS:
        where = "all sites" if role == "data_manager" else (", ".join(sites) or "no clinical data")
        click.echo(f"  {username:<11} {role:<13} {where}")


study_cli = AppGroup("study", help="The study definition and its amendments.")


@study_cli.command("apply-due")
def study_apply_due():
    """Bring approved amendments whose effective date (UTC) has arrived into force (idempotent;
    each app process also does it at start-up and every AMENDMENTS_CHECK_SECONDS)."""
    applied = apply_due()
    for amendment in applied:
        click.echo(f"In force: {amendment.label} (effective {amendment.effective_date.isoformat()}).")
    if not applied:
        click.echo("No amendment is due.")
    click.echo(f"Study definition in force: version {study_in_force().version}.")


def register_cli(app: Flask) -> None:
    for group in (users_cli, audit_cli, sites_cli, demo_cli, ctcae_cli, study_cli):
        app.cli.add_command(group)
