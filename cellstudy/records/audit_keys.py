"""The audit chain's keys (issue 13): the HMAC key that hashes each new audit record and
the Ed25519 key that signs an exported chain head.

Pure: no Flask and no database, so an auditor can check a signed head with the public key
alone (`verify_signed_head`), without the app.

- HMAC key: 32 random bytes or more, written as hex (or "base64:..."). It is never stored
  in the database nor in the instance folder: it comes from the environment
  (CELLSTUDY_AUDIT_KEY) or from a key file named there (CELLSTUDY_AUDIT_KEY_FILE). A key
  file holds one key per line: the first writes, the others are retired keys kept so the
  records they hashed can still be verified (a rotation). Its id, the first 16 hex digits of
  the key's SHA-256, is what the trail records; never the key.
- Signing key: an Ed25519 private key in PEM (CELLSTUDY_AUDIT_SIGNING_KEY_FILE); the
  auditor keeps the public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MIN_KEY_BYTES = 32
HEAD_FORMAT = "cellstudy-audit-head/1"


class AuditKeyError(RuntimeError):
    """A key that is missing, unreadable, too short or kept where it must not be."""


def parse_key(text: str, *, source: str) -> bytes:
    """A key written as hex or as "base64:<text>"; at least 32 bytes."""
    text = text.strip()
    try:
        key = base64.b64decode(text[7:], validate=True) if text.startswith("base64:") else bytes.fromhex(text)
    except (ValueError, binascii.Error):
        raise AuditKeyError(f"{source}: not a hex or base64: key") from None
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"{source}: the key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def key_id(key: bytes) -> str:
    """What the trail records about a key: a fingerprint, never the key."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class HmacKeys:
    """The key that hashes new records and every key (by id) that can verify old ones."""

    current: bytes
    source: str
    by_id: dict[str, bytes] = field(default_factory=dict)

    @property
    def current_id(self) -> str:
        return key_id(self.current)


def keys_from_lines(lines: list[str], *, source: str) -> HmacKeys:
    keys = [
        parse_key(line, source=f"{source}, line {n}")
        for n, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise AuditKeyError(f"{source}: no key in it")
    return HmacKeys(keys[0], source, {key_id(k): k for k in keys})


def read_key_file(path: str | os.PathLike) -> HmacKeys:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise AuditKeyError(f"audit key file {path}: {error.strerror}") from None
    return keys_from_lines(text.splitlines(), source=f"audit key file {path}")


def load_hmac_keys(
    *, key: str | None, key_file: str | None, retired: str | None = None, forbidden_dirs: tuple[str, ...] = ()
) -> HmacKeys | None:
    """The configured keys: `key` (hex/base64 text, with comma-separated `retired` keys) or
    `key_file`; None when neither is set. A key file inside one of `forbidden_dirs` (the
    instance folder, next to the database) is refused."""
    if key:
        return keys_from_lines([key, *(retired or "").split(",")], source="CELLSTUDY_AUDIT_KEY")
    if not key_file:
        return None
    refuse_inside(key_file, forbidden_dirs, what="audit key file")
    return read_key_file(key_file)


def refuse_inside(path: str, forbidden_dirs: tuple[str, ...], *, what: str) -> None:
    real = os.path.realpath(path)
    for folder in forbidden_dirs:
        folder = os.path.realpath(folder)
        if os.path.commonpath([real, folder]) == folder:
            raise AuditKeyError(
                f"{what} {path} is inside {folder}: keep it outside the instance folder, away from the database"
            )


def new_hmac_key() -> str:
    return secrets.token_hex(MIN_KEY_BYTES)


def write_secret(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> None:
    """A file only its owner can read (0600), created with that mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def rotate_key_file(path: str | os.PathLike) -> str:
    """A new key on the first line; the old ones stay below it (retired, for verification)."""
    read_key_file(path)  # refuses a file that is not a key file before it is rewritten
    new = new_hmac_key()
    kept = [line for line in Path(path).read_text().splitlines() if line.strip()]
    write_secret(path, "\n".join([new, *kept]) + "\n", overwrite=True)
    return key_id(bytes.fromhex(new))


# --- the signed head -----------------------------------------------------------------------


def generate_signing_key(private_path: str | os.PathLike, public_path: str | os.PathLike) -> str:
    """An Ed25519 key pair: the private key 0600 for the app, the public key for the auditor.
    Returns the public key's fingerprint."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(private_path, pem.decode())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    Path(public_path).write_bytes(public_pem)
    return fingerprint(private.public_key())


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise AuditKeyError(f"signing key {path}: {error.strerror}") from None
    except ValueError:
        raise AuditKeyError(f"signing key {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"signing key {path}: not an Ed25519 key")
    return key


def load_public_key(pem: bytes, *, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise AuditKeyError(f"{source}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{source}: not an Ed25519 public key")
    return key


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _signed_bytes(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_head(payload: dict, private_key: Ed25519PrivateKey) -> dict:
    """The head document: the payload, the signer's fingerprint and the signature over both."""
    body = {"format": HEAD_FORMAT, **payload, "public_key_fingerprint": fingerprint(private_key.public_key())}
    signature = private_key.sign(_signed_bytes(body))
    return {**body, "signature": base64.b64encode(signature).decode()}


class BadHead(ValueError):
    """An exported head that is not what the holder of the signing key wrote."""


HEAD_FIELDS = {"count": int, "last_id": (int, type(None)), "last_hash": str, "at": str}


def verify_signed_head(document: dict, public_key_pem: bytes) -> dict:
    """Check an exported head with the public key alone; returns it, or raises BadHead
    naming what is wrong. Needs neither the app nor the database."""
    public_key = load_public_key(public_key_pem, source="public key")
    if not isinstance(document, dict) or document.get("format") != HEAD_FORMAT:
        raise BadHead(f"not a {HEAD_FORMAT} document")
    for name, kind in HEAD_FIELDS.items():
        if not isinstance(document.get(name), kind) or isinstance(document.get(name), bool):
            raise BadHead(f"field {name!r} is missing or malformed")
    if document.get("public_key_fingerprint") != fingerprint(public_key):
        raise BadHead("signed with another key (public key fingerprint differs)")
    body = {k: v for k, v in document.items() if k != "signature"}
    try:
        public_key.verify(base64.b64decode(document.get("signature") or "", validate=True), _signed_bytes(body))
    except (InvalidSignature, ValueError, binascii.Error):
        raise BadHead("signature does not match: the head was altered or not signed by this key") from None
    return document


def keygen(folder: str | os.PathLike) -> dict[str, str]:
    """The HMAC key file and the Ed25519 pair in `folder` (never overwriting a key)."""
    folder = Path(folder)
    paths = {
        "hmac": folder / "audit.key",
        "private": folder / "audit-signing.pem",
        "public": folder / "audit-signing.pub.pem",
    }
    for path in paths.values():
        if path.exists():
            raise AuditKeyError(f"{path} exists: keys are never overwritten")
    write_secret(paths["hmac"], new_hmac_key() + "\n")
    fp = generate_signing_key(paths["private"], paths["public"])
    return {
        **{k: str(v) for k, v in paths.items()},
        "key_id": read_key_file(paths["hmac"]).current_id,
        "fingerprint": fp,
    }


def main(argv: list[str] | None = None) -> int:
    """Without the app (e.g. before production can start, or on the auditor's machine):
    `python -m cellstudy.records.audit_keys keygen DIR` or `... check-head HEAD.json PUB.pem`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) == 2 and args[0] == "keygen":
            made = keygen(args[1])
            print(
                f"HMAC key {made['key_id']}: {made['hmac']}; signing key {made['private']}; public key {made['public']}"
            )
            return 0
        if len(args) == 3 and args[0] == "check-head":
            head = verify_signed_head(json.loads(Path(args[1]).read_text()), Path(args[2]).read_bytes())
            print(f"Signed head good: {head['count']} records ending at id {head['last_id']} ({head['at']}).")
            return 0
    except (AuditKeyError, BadHead, OSError, ValueError) as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
