"""Key generation, the lookup digest, and encryption of secrets at rest.

The database holds only an HMAC-SHA256 digest (to find a key by its value) and an AES-GCM
ciphertext (to reveal it). Both are keyed by the deployment's secret key, so a copied
database file alone reveals nothing. Losing the secret key invalidates every API key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets as _random
import string
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 32
ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
MAX_PREFIX = 16
PREFIX = re.compile(rb"[A-Za-z0-9_-]{0,16}")  # keys.prefix: what secret scanners can spot


def generate_secret(prefix: str = "") -> str:
    """A new API key value: the prefix, then 32 characters from [A-Za-z0-9] (about 190 bits)."""
    return prefix + "".join(_random.choice(ALPHABET) for _ in range(SECRET_LENGTH))


def generate_token() -> str:
    """256 random bits, URL-safe; never starting with `-`, which a command line would take
    for an option (`--token -abc...`)."""
    while True:
        token = _random.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def generate_token_id() -> str:
    """`t_` + 26 base32 characters, time-sortable like key ids."""
    return "t_" + generate_id()[2:]


_last_id = 0


def generate_id() -> str:
    """`k_` + 26 base32 characters: 48 bits of milliseconds then 80 random bits.

    Ids sort by creation time, which gives cursor paging a stable, unique order. Two ids made
    in one millisecond (or after the clock stepped back) would sort at random: the later one is
    then the earlier one plus one, so a process's ids always sort in the order it made them.
    """
    global _last_id
    value = (int(time.time() * 1000) << 80) | _random.randbits(80)
    if value <= _last_id:
        value = _last_id + 1
    _last_id = value
    chars = []
    for _ in range(26):
        chars.append(ID_ALPHABET[value & 31])
        value >>= 5
    return "k_" + "".join(reversed(chars))


def could_be_secret(value: bytes) -> bool:
    """Whether a presented value has the shape of a secret this gateway issues: an optional
    prefix (`keys.prefix`, any earlier one too) and 32 letters and digits. Anything else is
    refused without hashing or caching it, so junk values cost no memory."""
    if not SECRET_LENGTH <= len(value) <= SECRET_LENGTH + MAX_PREFIX:
        return False
    return value[-SECRET_LENGTH:].isalnum() and PREFIX.fullmatch(value[:-SECRET_LENGTH]) is not None


def is_id(text: str) -> bool:
    return len(text) == 28 and text.startswith("k_") and all(c in ID_ALPHABET for c in text[2:])


class SecretBox:
    """Derives a digest key and an encryption key from one master secret."""

    def __init__(self, master: str) -> None:
        raw = master.encode()
        self._digest_key = hmac.new(raw, b"gateway lookup digest v1", hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(raw, b"gateway encryption v1", hashlib.sha256).digest())

    def digest(self, secret: str | bytes) -> str:
        """The lookup digest as stored: hex of HMAC-SHA256."""
        return self.raw_digest(secret.encode() if isinstance(secret, str) else secret).hex()

    def raw_digest(self, secret: bytes) -> bytes:
        return hmac.digest(self._digest_key, secret, "sha256")

    def encrypt(self, secret: str, key_id: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return base64.b64encode(nonce + sealed).decode()

    def decrypt(self, sealed: str, key_id: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
