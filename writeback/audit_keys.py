"""The audit trail's keys: HMAC keys that chain the entries, and the Ed25519 key that signs exported heads.

Keys come from settings (the environment), never from the database. Each is known by a short id that can
be stored and shown without revealing it: an entry records the id of the key that hashed it, and an
exported head the id of the key that signed it. No models here, so production settings can check keys
before Django starts.
"""

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_ID_LENGTH = 16
# Audit keys shorter than this are refused in production: an HMAC key should carry 128+ bits of entropy.
MIN_AUDIT_KEY_LENGTH = 32
_KEY_ID_MESSAGE = b"fhir-writeback audit key id"


def audit_key_id(secret: str) -> str:
    """A non-secret fingerprint of an audit key: one HMAC of a fixed message, so it reveals nothing."""
    return hmac.new(secret.encode(), _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:KEY_ID_LENGTH]


@dataclass(frozen=True)
class Keyring:
    current_id: str
    current: bytes
    keys: Mapping[str, bytes]
    development_id: str

    def describe(self, key_id: str) -> str:
        return f"{key_id} (the development key)" if key_id == self.development_id else key_id


@lru_cache(maxsize=16)
def _keyring(current: str, old: tuple[str, ...], development: str) -> Keyring:
    if not current:
        raise ImproperlyConfigured("WRITEBACK_AUDIT_KEY is empty: the audit trail cannot be written")
    keys = {audit_key_id(secret): secret.encode() for secret in old}
    current_id = audit_key_id(current)
    keys[current_id] = current.encode()
    return Keyring(current_id, current.encode(), keys, audit_key_id(development))


def keyring() -> Keyring:
    """The current key (hashes new entries) and the retired ones (verify older entries)."""
    return _keyring(
        settings.WRITEBACK_AUDIT_KEY,
        tuple(settings.WRITEBACK_AUDIT_OLD_KEYS),
        settings.WRITEBACK_DEV_AUDIT_KEY,
    )


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"not base64: {exc}") from exc


def signing_key_from(value: str) -> Ed25519PrivateKey:
    """An Ed25519 private key: base64 of its 32 bytes, or PEM (`openssl genpkey -algorithm ed25519`)."""
    if "-----BEGIN" in value:
        key = serialization.load_pem_private_key(value.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ImproperlyConfigured("WRITEBACK_AUDIT_SIGNING_KEY must be an Ed25519 key")
        return key
    raw = _b64(value)
    if len(raw) != 32:
        raise ImproperlyConfigured("WRITEBACK_AUDIT_SIGNING_KEY must be 32 bytes (base64) or a PEM key")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key_from(value: str) -> Ed25519PublicKey:
    raw = _b64(value)
    if len(raw) != 32:
        raise ImproperlyConfigured(f"an Ed25519 public key is 32 bytes (base64), not {len(raw)}: {value!r}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    """Base64 of the raw public key: what WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS lists."""
    return base64.b64encode(key.public_bytes_raw()).decode()


def signing_key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(key.public_bytes_raw()).hexdigest()[:KEY_ID_LENGTH]


def signing_key() -> Ed25519PrivateKey | None:
    """The key export_audit_head signs with; None where it is not configured (only the exporter needs it)."""
    value = settings.WRITEBACK_AUDIT_SIGNING_KEY
    return signing_key_from(value) if value else None


def trusted_public_keys() -> dict[str, Ed25519PublicKey]:
    """Public keys a head's signature may verify with, by id: this installation's own signing key's, and
    those listed in WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS. A head names its key; it never brings one."""
    keys = [public_key_from(value) for value in settings.WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS]
    own = signing_key()
    if own is not None:
        keys.append(own.public_key())
    return {signing_key_id(key): key for key in keys}


def signature_valid(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def production_problems(
    *,
    audit_key: str,
    old_keys: Iterable[str],
    signing: str,
    public_keys: Iterable[str],
    development_key: str,
    development_signing_key: str,
) -> list[str]:
    """What production settings refuse: a missing, short or published audit key, and published or
    malformed signing keys. A missing signing key is fine: only the host that exports heads holds it.
    (Settings call this while they load, so everything comes in as arguments.)"""
    problems = []
    if (
        len(audit_key) < MIN_AUDIT_KEY_LENGTH
        or audit_key == development_key
        or audit_key.startswith("insecure")
    ):
        problems.append(
            f"WRITEBACK_AUDIT_KEY (or WRITEBACK_AUDIT_KEY_FILE) must be set to a random value of "
            f"{MIN_AUDIT_KEY_LENGTH}+ characters, not the development key"
        )
    if development_key in old_keys:
        problems.append("WRITEBACK_AUDIT_OLD_KEYS must not list the development key (it is published)")
    published = signing_key_id(signing_key_from(development_signing_key).public_key())
    try:
        if signing and signing_key_id(signing_key_from(signing).public_key()) == published:
            problems.append("WRITEBACK_AUDIT_SIGNING_KEY must not be the development key (it is published)")
        if published in {signing_key_id(public_key_from(k)) for k in public_keys}:
            problems.append("WRITEBACK_AUDIT_HEAD_PUBLIC_KEYS must not list the development key")
    except (ImproperlyConfigured, ValueError) as exc:
        problems.append(f"audit signing keys: {exc}")
    return problems
