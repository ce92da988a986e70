"""The tampering of issue 13, done as a database administrator would: past the append-only
triggers (SQLite: DROP TRIGGER, recreated afterwards; PostgreSQL: session_replication_role =
replica in this connection, as the superuser), with plain SQL.

Only SQLAlchemy Core and a `hasher(prev_hash, values) -> hash` from the caller, so the same
attacks also run against the code before issue 13 (docs/assurance/audit.md says how)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from cellstudy.records import audit

# the hashed columns as the app declares them: a forged record follows the app's own scheme
HASHED = audit._HASHED
Hasher = Callable[[str, dict], str]


@contextmanager
def past_the_triggers(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction of its own where the triggers do not fire."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield conn
            return
        triggers = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ('audit_record', 'audit_head')"
        ).all()
        for name, _sql in triggers:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
        yield conn
        for _name, sql in triggers:
            conn.exec_driver_sql(sql)


def _table(conn) -> sa.Table:
    return sa.Table("audit_record", sa.MetaData(), autoload_with=conn)


def records(conn, since: int = 0) -> list[dict]:
    table = _table(conn)
    rows = conn.execute(sa.select(table).where(table.c.id >= since).order_by(table.c.id)).mappings().all()
    return [dict(r) for r in rows]


def last_id(conn) -> int:
    return conn.exec_driver_sql("SELECT max(id) FROM audit_record").scalar()


def plain_sha256(encode: Callable[[dict], bytes]) -> Hasher:
    """The hasher of an attacker without the key: SHA-256 over the app's canonical encoding."""
    return lambda prev, values: hashlib.sha256(prev.encode() + encode(values)).hexdigest()


def delete_last(conn, n: int = 1) -> None:
    conn.execute(sa.text("DELETE FROM audit_record WHERE id > :id"), {"id": last_id(conn) - n})


def forged_append(conn, hasher: Hasher, *, key_id: str | None = None) -> int:
    """A record chained onto the last one, its hash recomputed with `hasher`."""
    last = records(conn, last_id(conn))[0]
    values = {k: last[k] for k in HASHED} | {"action": "update", "field": "alt", "old_value": "1", "new_value": "99"}
    row = {**values, "id": last["id"] + 1, "prev_hash": last["hash"], "hash": hasher(last["hash"], values)}
    if "key_id" in last:
        row["key_id"] = key_id
    conn.execute(sa.insert(_table(conn)), [row])
    return row["id"]


def rechain(conn, hasher: Hasher, since: int, *, rewrite: dict | None = None) -> None:
    """Recompute prev_hash and hash of every record from id `since` on (rewriting the first
    with `rewrite`), so each links to the one before it."""
    table = _table(conn)
    before = conn.execute(sa.select(table.c.hash).where(table.c.id < since).order_by(table.c.id.desc()).limit(1))
    prev = before.scalar() or "0" * 64
    for n, row in enumerate(records(conn, since)):
        values = {k: row[k] for k in HASHED}
        if n == 0 and rewrite:
            values.update(rewrite)
        digest = hasher(prev, values)
        conn.execute(table.update().where(table.c.id == row["id"]).values(**values, prev_hash=prev, hash=digest))
        prev = digest


def rewrite_middle_and_rechain(conn, hasher: Hasher, rid: int) -> None:
    rechain(conn, hasher, rid, rewrite={"new_value": "forged"})


def delete_middle_and_rechain(conn, hasher: Hasher, rid: int) -> None:
    conn.execute(sa.text("DELETE FROM audit_record WHERE id = :id"), {"id": rid})
    rechain(conn, hasher, rid + 1)


def cover_the_head(conn) -> None:
    """Move audit_head (issue 13) to the tampered trail's end, as a careful attacker would."""
    if not sa.inspect(conn).has_table("audit_head"):
        return
    count, top = conn.exec_driver_sql("SELECT count(*), max(id) FROM audit_record").one()
    last = conn.execute(sa.text("SELECT hash, key_id FROM audit_record WHERE id = :id"), {"id": top}).one()
    conn.execute(
        sa.text("UPDATE audit_head SET record_count = :c, last_id = :i, last_hash = :h, key_id = :k WHERE id = 1"),
        {"c": count, "i": top, "h": last.hash, "k": last.key_id},
    )
