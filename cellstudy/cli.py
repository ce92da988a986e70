"""flask commands: users, audit verification, the demo study."""

from __future__ import annotations

import json
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .auth import service as auth
from .adverse_events.loader import load
from .records import audit as audit_trail, audit_keys
from .amendments.service import apply_due
from .settings import study_in_force
from .demo import DEMO_PASSWORD, DEMO_USERS, load_demo
from .exports.odm.cli import odm_cli

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
@click.password_option(help="At least 12 characters, not easy to guess (zxcvbn score 3 of 4).")
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


@users_cli.command("reset-password")
@click.argument("username")
@click.password_option("--password", prompt="Temporary password", help="The policy of `users create` applies.")
def users_reset_password(username, password):
    """Set a temporary password that the user must change at the next log-in (audited; their
    sessions end and a lock is lifted)."""
    try:
        auth.reset_password(username, password)
    except auth.AuthError as error:
        _fail(error)
    click.echo(f"{username}: temporary password set; to be changed at the next log-in.")


@sites_cli.command("create")
@click.argument("code")
@click.argument("name")
@click.option("--timezone", default="UTC")
def sites_create(code, name, timezone):
    auth.create_site(code.upper(), name, timezone)
    click.echo(f"Site {code.upper()} created.")


@audit_cli.command("verify")
@click.option("--head", "head_file", type=click.Path(dir_okay=False), help="An exported signed head to check against.")
@click.option("--public-key", type=click.Path(dir_okay=False), help="The auditor's Ed25519 public key (PEM).")
@click.option("--replay", is_flag=True, help="Also rebuild the clinical records from the trail and compare.")
@click.option("--limit", default=50, show_default=True, help="Findings listed (the rest are counted).")
def audit_verify(head_file, public_key, replay, limit):
    """Walk the whole chain and name every record that does not match (exit 1 on any finding)."""
    signed = _signed_head(head_file, public_key) if head_file or public_key else None
    result = audit_trail.verify(signed_head=signed, limit=limit)
    replayed = audit_trail.replay(limit=limit) if replay else None
    for note in result.notes[:limit]:
        click.echo(f"note: {note}")
    if result.ok and (replayed is None or replayed.ok):
        extra = f" and the signed head of {signed['at']}" if signed else ""
        click.echo(
            f"Audit trail intact: {result.checked} records verified ({result.keyed} keyed); "
            f"its end matches audit_head{extra}."
        )
        if replayed is not None:
            click.echo(f"Replay: {replayed.rows} clinical rows match the trail ({replayed.values} values).")
        return
    if not result.ok:
        click.echo(
            f"AUDIT TRAIL BROKEN at record {result.first_bad_id}: {result.problem} "
            f"({result.total} finding(s), {result.checked} records read).",
            err=True,
        )
        for finding in result.findings:
            where = f"record {finding.record_id}" if finding.record_id is not None else "trail"
            click.echo(f"  {where} [{finding.kind}]: {finding.message}", err=True)
        if result.more:
            click.echo(f"  ... and {result.more} more finding(s)", err=True)
    if replayed is not None and not replayed.ok:
        click.echo(
            f"REPLAY: {replayed.total} stored value(s) differ from the audit trail "
            f"({replayed.rows} clinical rows compared).",
            err=True,
        )
        for finding in replayed.findings:
            click.echo(f"  {finding.message}", err=True)
        if replayed.more:
            click.echo(f"  ... and {replayed.more} more", err=True)
    sys.exit(1)


def _signed_head(head_file, public_key) -> dict:
    if not (head_file and public_key):
        _fail(click.UsageError("--head and --public-key go together: the head is checked with the public key"))
    try:
        with open(head_file) as f:
            document = json.load(f)
        with open(public_key, "rb") as f:
            pem = f.read()
        return audit_keys.verify_signed_head(document, pem)
    except OSError as error:
        click.echo(f"SIGNED HEAD REFUSED: {error.filename}: {error.strerror}", err=True)
    except json.JSONDecodeError as error:
        click.echo(f"SIGNED HEAD REFUSED: {head_file} is not JSON ({error.msg}, line {error.lineno})", err=True)
    except (audit_keys.BadHead, audit_keys.AuditKeyError) as error:
        click.echo(f"SIGNED HEAD REFUSED: {head_file}: {error}", err=True)
    sys.exit(1)


@audit_cli.command("checkpoint")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the head (JSON).")
@click.option(
    "--signing-key",
    type=click.Path(dir_okay=False),
    help="Ed25519 private key (PEM); default: CELLSTUDY_AUDIT_SIGNING_KEY_FILE.",
)
def audit_checkpoint(output, signing_key):
    """Verify the trail, then export its head signed with Ed25519 for the auditor to keep."""
    path = signing_key or current_app.config.get("AUDIT_SIGNING_KEY_FILE")
    if not path:
        _fail(RuntimeError("no signing key: pass --signing-key or set CELLSTUDY_AUDIT_SIGNING_KEY_FILE"))
    try:
        private = audit_keys.load_private_key(path)
    except audit_keys.AuditKeyError as error:
        _fail(error)
    result = audit_trail.verify(limit=5)
    if not result.ok:
        click.echo(f"Not signed: the audit trail is broken at record {result.first_bad_id}: {result.problem}", err=True)
        sys.exit(1)
    document = audit_keys.sign_head(audit_trail.signed_head_payload(), private)
    with open(output, "w") as f:
        json.dump(document, f, indent=1, sort_keys=True)
        f.write("\n")
    click.echo(
        f"Signed head written to {output}: {document['count']} records ending at id {document['last_id']} "
        f"({document['last_hash'][:16]}…), key {document['public_key_fingerprint'][:23]}…"
    )


@audit_cli.command("keygen")
@click.option(
    "--out",
    "folder",
    required=True,
    type=click.Path(file_okay=False),
    help="A folder outside the instance folder (created 0700).",
)
def audit_keygen(folder):
    """Create the HMAC key file (audit.key) and the Ed25519 pair (audit-signing.pem, .pub.pem)."""
    try:
        audit_keys.refuse_inside(folder, (current_app.instance_path,), what="key folder")
        made = audit_keys.keygen(folder)
    except audit_keys.AuditKeyError as error:
        _fail(error)
    click.echo(
        f"HMAC key (id {made['key_id']}): {made['hmac']}\nSigning key: {made['private']}\n"
        f"Public key for the auditor: {made['public']} ({made['fingerprint']})\n"
        f"Set CELLSTUDY_AUDIT_KEY_FILE={made['hmac']} and CELLSTUDY_AUDIT_SIGNING_KEY_FILE={made['private']}; "
        f"give {made['public']} to the auditor."
    )


@audit_cli.command("rotate-key")
@click.argument("key_file", type=click.Path(dir_okay=False, exists=True))
def audit_rotate_key(key_file):
    """Put a new HMAC key first in KEY_FILE (the old ones stay, to verify what they hashed);
    the next record written announces it in the chain."""
    try:
        kid = audit_keys.rotate_key_file(key_file)
    except audit_keys.AuditKeyError as error:
        _fail(error)
    click.echo(f"New audit key {kid} written first in {key_file}; restart the app to use it.")


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
    for group in (users_cli, audit_cli, sites_cli, demo_cli, ctcae_cli, study_cli, odm_cli):
        app.cli.add_command(group)
